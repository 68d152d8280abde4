#!/usr/bin/env bash
# Does the project still pass with the newest versions pyproject.toml allows?
#
#   bash scripts/check_latest.sh           # throwaway venv with the newest allowed versions, the fast
#                                          # tests (-m "not slow"), and what differs from constraints.txt
#   bash scripts/check_latest.sh --write   # the same; if the tests pass, those versions become the lock
#                                          # (run the whole suite, `bash .ci/run`, before landing it)
#
# constraints.txt is the lock: the exact versions CI installed and tested, used by the README's
# install command and by .ci/run (pip's -c). This script is how it is regenerated. torch stays at
# the README's pin (torch==2.13.0, installed first): the newest torch on PyPI is a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
[ "${1:-}" = "--write" ] && write=1
work=$(mktemp -d)
trap 'rm -rf "$work" build' EXIT   # setuptools builds the wheel in ./build
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q torch==2.13.0
echo "torch==2.13.0" > "$work/torch.txt"   # held at the pin while everything else is upgraded
"$py" -m pip install -q --upgrade --upgrade-strategy eager -c "$work/torch.txt" '.[test]'   # newest allowed, not the lock
"$py" -m pip freeze --exclude-editable | grep -v '^arc-jepa-vq-search' | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/' > "$work/latest.txt"
"$py" - "$work/latest.txt" constraints.txt <<'PY'
import re, sys
def read(path):
    pins = {}
    for line in open(path):
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = ver
    return pins
latest, lock = read(sys.argv[1]), read(sys.argv[2])
changed = [f"  {n}: {lock[n]} (lock) -> {latest[n]} (newest allowed)" for n in sorted(latest) if n in lock and lock[n] != latest[n]]
added = [f"  {n}: {latest[n]} (not in the lock)" for n in sorted(latest) if n not in lock]
gone = [f"  {n}: {lock[n]} (in the lock, no longer installed)" for n in sorted(lock) if n not in latest]
print(f"{len(changed)} package(s) newer than the lock, {len(added)} new, {len(gone)} gone")
print("\n".join(changed + added + gone))
PY
echo "fast tests with the newest allowed versions:"
if "$py" -m pytest -q -m "not slow" -p no:cacheprovider; then
  echo "check_latest: the fast tests pass with the newest allowed versions"
  if [ "$write" = 1 ]; then
    { sed -n '1,/^# ---- pins/p' constraints.txt; cat "$work/latest.txt"; } > "$work/constraints.txt"
    mv "$work/constraints.txt" constraints.txt
    echo "wrote constraints.txt; run the whole suite (bash .ci/run) before landing it"
  fi
else
  echo "check_latest: the fast tests FAIL with the newest allowed versions (the lock is unchanged)"
  exit 1
fi
