"""Which versions of the packages that decide a run's numbers an experiment ran with.

Every experiment folder (and every scripts/train.py run folder) holds `versions.json` beside
command.txt: Python and the installed torch, ray, optuna and numpy (read from the package
metadata, so nothing heavy is imported). A resumed search, `scripts/verify.py` and the report
compare it with what is installed now and say what differs, since a new release can change
the numbers (a sampler's draws, a kernel's rounding) without any change here.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from model.io import atomic_write_json

PACKAGES = ("torch", "ray", "optuna", "numpy")
VERSIONS_FILE = "versions.json"


def installed() -> dict[str, str]:
    """{"python": "3.11.7", "torch": "2.13.0+cpu", ...} for this interpreter."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def record(folder: Path) -> dict[str, str]:
    """Write folder/versions.json with the installed versions; returns them."""
    versions = installed()
    atomic_write_json(Path(folder) / VERSIONS_FILE, versions)
    return versions


def recorded(folder: Path) -> dict[str, str] | None:
    """folder/versions.json, or None for a folder from before it was written."""
    path = Path(folder) / VERSIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def drift(folder: Path) -> list[str]:
    """What is installed now that differs from the folder's versions.json, one line per package:
    'optuna 5.2.0 here, 5.1.0 when the experiment ran'. Empty when they agree or nothing was recorded."""
    then = recorded(folder) or {}
    now = installed()
    return [f"{name} {now[name]} here, {then[name]} when the experiment ran"
            for name in now if name in then and then[name] != now[name]]
