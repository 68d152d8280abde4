#!/usr/bin/env python
"""The README's test command, run several times in a row while a user's search runs beside it:
does every run pass, and is the search still running (and still making progress) after each?

    python bench/suite_under_load.py [--runs 3] [--space spaces/vq_gentle.yaml] [--num-samples 400]
                                     [--out FILE]

The search is `scripts/search.py SPACE --num-samples N --no-final-race` in a temporary folder, on
a local Ray of its own, started first (a user's long search). After each test run the bench checks
that the search's driver is alive with its Ray (the gcs_server and raylet it started), and counts
the trial-epochs it logged meanwhile (it must have gone on). At the end the search gets Ctrl-C (it stops cleanly and is
resumable) and its exit status is recorded. Run it from a clone whose code nobody edits meanwhile:
the test runs use this checkout. Exit status 1 when a test run fails or the search died.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, emit, shown_command  # noqa: E402

TEST_COMMAND = [sys.executable, "-m", "pytest", "-q"]  # the README's test command, in this checkout


def search_alive(driver: psutil.Process) -> bool:
    """The driver runs, and so do the GCS and raylet of the Ray it started."""
    try:
        if not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE:
            return False
        names = {p.name() for p in driver.children(recursive=True)}
    except psutil.Error:
        return False
    return {"gcs_server", "raylet"} <= names


def epochs_logged(exp_dir: Path) -> int:
    """Trial-epochs the search has logged so far (lines of its trials' metrics.jsonl): its progress,
    whether ASHA stops a trial or it runs to its last epoch."""
    return sum(len(p.read_text().splitlines()) for p in exp_dir.glob("trial_*/run/metrics.jsonl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--space", default="spaces/vq_gentle.yaml")
    parser.add_argument("--num-samples", type=int, default=400,
                        help="enough trials to outlast the test runs (128 ended during the second of three runs, "
                        "each 43 min on 2 busy cores)")
    parser.add_argument("--out", help="also write the section to this file")
    args = parser.parse_args(argv)

    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="beside-") as tmp:
        folder = Path(tmp)
        log = open(folder / "search.log", "w")
        search = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "search.py"), str(ROOT / args.space),
                                   "--num-samples", str(args.num_samples), "--no-final-race", "--name", "beside"],
                                  cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        driver, exp_dir = psutil.Process(search.pid), folder / "results" / "beside"
        try:
            deadline = time.time() + 300
            while not (search_alive(driver) and epochs_logged(exp_dir) > 0):
                if time.time() > deadline or search.poll() is not None:
                    raise SystemExit(f"the search did not start: {(folder / 'search.log').read_text()[-2000:]}")
                time.sleep(1)
            for run in range(1, args.runs + 1):
                before, start = epochs_logged(exp_dir), time.time()
                tests = subprocess.run(TEST_COMMAND, cwd=ROOT, capture_output=True, text=True)
                summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
                alive, after = search_alive(driver), epochs_logged(exp_dir)
                # a search that ended by itself (its budget ran out, exit 0) was not killed, but the
                # runs after it would no longer run beside a search: the bench stops there, unfinished
                state = "yes" if alive else (f"finished its budget (exit {search.returncode})"
                                             if search.poll() == 0 else f"died (exit {search.poll()})")
                rows.append((run, tests.returncode, time.time() - start, summary, state, after - before))
                ok &= tests.returncode == 0 and alive and after > before
                print(rows[-1], flush=True)
                if tests.returncode != 0:
                    (Path(tempfile.gettempdir()) / f"suite_under_load_run{run}.txt").write_text(tests.stdout + tests.stderr)
                if not alive:
                    break
            alive_at_end = search_alive(driver)
            search.send_signal(signal.SIGINT)  # Ctrl-C: the search stops cleanly, resumable
            code = search.wait(timeout=600)
            # the log's last lines, its paths relative (the temporary folder and this checkout are no reader's)
            tail = [line.replace(f"{folder}/", "").replace(f"{ROOT}/", "")
                    for line in (folder / "search.log").read_text().splitlines()[-3:]]
        finally:
            if search.poll() is None:
                os.killpg(search.pid, signal.SIGKILL)
            log.close()

    lines = [
        f"## The test suite beside a running search ({args.runs} runs)",
        "",
        f"Measured by `{shown_command('suite_under_load.py', argv)}` at commit {commit()} on {platform.machine()} "
        f"with {os.cpu_count()} cores (Python {platform.python_version()}). A search "
        f"(`scripts/search.py {args.space} --num-samples {args.num_samples} --no-final-race`, its own local Ray, "
        "2 trials at a time) runs while the README's test command runs again and again in the same checkout.",
        "",
        "| run | exit | wall (min) | pytest's summary | search alive after | trial-epochs the search ran meanwhile |",
        "|---|---|---|---|---|---|",
        *[f"| {r} | {code_} | {wall / 60:.1f} | {re.sub(r'[|]', '/', summary)} | {state} | {n} |"
          for r, code_, wall, summary, state, n in rows],
        "",
        f"{len(rows)} of {args.runs} test runs ran. The search was {'still running' if alive_at_end else 'no longer running'} "
        f"after the last; {'Ctrl-C then ended it' if alive_at_end else 'it had ended'} with exit status {code} "
        f"({' / '.join(t.strip() for t in tail if t.strip())[:300]}).",
    ]
    emit("\n".join(lines) + "\n", args.out)
    return 0 if ok and alive_at_end and len(rows) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
