"""Shared by the bench/ scripts: how a section names the command and commit that measured it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shown_command(script: str, argv: list[str] | None) -> str:
    """`python bench/SCRIPT ARGS` as given, without --out FILE (where the text goes, not what ran)."""
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--out" and (i == 0 or given[i - 1] != "--out")]
    return shlex.join(["python", f"bench/{script}", *shown])


def commit() -> str:
    """Short hash of HEAD, marked when code (not docs) has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    code = ["model", "search", "scripts", "bench", "spaces", "configs", "pyproject.toml"]
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *code)
    return head + (" with uncommitted code changes" if dirty else "")


def emit(text: str, out: str | None) -> None:
    """Print a section and, with --out FILE, write it there too."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
