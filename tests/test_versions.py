"""search/versions.py: what an experiment ran with, and what differs now."""

import json
import platform
from importlib.metadata import version

from search.versions import PACKAGES, VERSIONS_FILE, drift, installed, record, recorded


def test_record_writes_the_installed_versions_and_drift_names_what_differs(tmp_path):
    assert recorded(tmp_path) is None and drift(tmp_path) == []  # a folder from before versions.json
    written = record(tmp_path)
    assert written == installed() == json.loads((tmp_path / VERSIONS_FILE).read_text())
    assert written["python"] == platform.python_version() and set(PACKAGES) <= set(written)
    assert written["optuna"] == version("optuna") and written["torch"] == version("torch")
    assert drift(tmp_path) == []
    (tmp_path / VERSIONS_FILE).write_text(json.dumps({**written, "optuna": "0.1", "numpy": "0.2"}))
    assert drift(tmp_path) == [f"optuna {written['optuna']} here, 0.1 when the experiment ran",
                               f"numpy {written['numpy']} here, 0.2 when the experiment ran"]


def test_the_lock_pins_every_dependency_within_its_range_and_both_installs_use_it():
    """constraints.txt (the lock) holds each of pyproject.toml's dependencies at a version its
    range allows, and the README's install command and .ci/run install with it."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, pinned = line.split("==")
            pins[canonicalize_name(name)] = pinned
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        req = Requirement(text)
        assert canonicalize_name(req.name) in pins, f"{req.name} is not in the lock"
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), (text, pins[canonicalize_name(req.name)])
    for path in ("README.md", ".ci/run"):
        text = (ROOT / path).read_text().replace(" -q ", " ")
        assert "pip install torch==2.13.0" in text and "pip install -c constraints.txt -e '.[test]'" in text, path
