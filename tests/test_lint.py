"""The linter (ruff, configured in pyproject.toml: pyflakes and syntax errors) finds nothing in
the repository: no unused import, no undefined name."""

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_finds_an_unused_import(tmp_path):
    """The same check, on a file with an unused import, fails (the test above can fail)."""
    (tmp_path / "bad.py").write_text("import os\n")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                           str(tmp_path / "bad.py")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "F401" in proc.stdout, proc.stdout + proc.stderr
