"""search/storage.py: where an experiment lives, for a folder and for a URI (no server needed)."""

import os
from pathlib import Path

import pytest

from search.storage import Location, download, is_uri, locate, locate_experiment, upload


def test_folder_and_uri_locations():
    assert not is_uri("results") and not is_uri("/mnt/shared/results") and is_uri("s3://bucket/prefix")
    folder = locate("results", "exp")
    assert folder == Location(local=Path("results/exp")) and folder.remote is None
    assert folder.ray_storage_path == str(Path("results").resolve())  # Ray wants an absolute parent
    assert folder.ray_experiment_path == str(Path("results/exp").resolve())
    uri = locate("s3://bucket/prefix/", "exp")
    assert uri.remote == "s3://bucket/prefix/exp" and uri.local == Path("results/exp")
    assert uri.ray_storage_path == "s3://bucket/prefix" and uri.ray_experiment_path == "s3://bucket/prefix/exp"
    assert locate_experiment("s3://bucket/prefix/exp/") == uri
    assert locate_experiment("results/exp") == folder


def test_a_folder_experiment_is_neither_downloaded_nor_uploaded(tmp_path):
    loc = Location(local=tmp_path / "exp")
    download(loc)
    assert not loc.local.exists()
    assert upload(loc, ["study.db"]) == []


def test_copies_through_pyarrow_to_and_from_a_uri(tmp_path):
    """file:// is a pyarrow URI too: the same code path as s3://, without a server."""
    remote_root = tmp_path / "bucket"
    remote_root.mkdir()
    loc = Location(local=tmp_path / "results" / "exp", remote=f"file://{remote_root}/exp")
    (loc.local / "trial_a").mkdir(parents=True)
    (loc.local / "best_config.yaml").write_text("seed: 0\n")
    (loc.local / "trial_a" / "params.json").write_text("{}")
    assert upload(loc, ["best_config.yaml", "trial_a", "missing.json"]) == ["best_config.yaml", "trial_a"]
    assert (remote_root / "exp" / "trial_a" / "params.json").read_text() == "{}"
    mirror = Location(local=tmp_path / "elsewhere" / "exp", remote=loc.remote)
    download(mirror)
    assert (mirror.local / "best_config.yaml").read_text() == "seed: 0\n"
    assert (mirror.local / "trial_a" / "params.json").is_file()
    with pytest.raises(OSError):
        download(Location(local=tmp_path / "x", remote=f"file://{tmp_path}/nothing-here"))


def test_orphaned_trial_folders_are_set_aside_in_storage_and_locally(tmp_path):
    """A resumed search's trial folders with no study trial go to orphaned/,
    where the experiment's readers do not count them (search/runner.py: set_aside_orphans)."""
    from search.export import read_trials
    from search.runner import set_aside_orphans

    remote_root = tmp_path / "bucket"
    loc = Location(local=tmp_path / "results" / "exp", remote=f"file://{remote_root}/exp")
    for name in ("trial_a", "trial_b"):
        (loc.local / name).mkdir(parents=True)
        (loc.local / name / "params.json").write_text('{"lr": 0.1}')
    # a trial the driver was killed before Ray wrote its params.json: only the trainable's files
    (loc.local / "trial_c" / "run").mkdir(parents=True)
    (loc.local / "trial_c" / "run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (remote_root / "exp").mkdir(parents=True)
    upload(loc, ["trial_a", "trial_b", "trial_c"])
    assert set_aside_orphans(loc, study_ids={"a"}) == ["trial_b", "trial_c"]
    for root in (loc.local, remote_root / "exp"):
        assert (root / "trial_a" / "params.json").is_file()
        assert not (root / "trial_b").exists() and not (root / "trial_c").exists()
        assert (root / "orphaned" / "trial_b" / "params.json").read_text() == '{"lr": 0.1}'
        assert (root / "orphaned" / "trial_c" / "run" / "metrics.jsonl").is_file()
    assert [t.path.name for t in read_trials(loc.local)] == ["trial_a"]
    assert set_aside_orphans(loc, study_ids={"a"}) == [], "nothing left to set aside"


def test_a_killed_trial_s_working_checkpoint_is_removed_by_the_next_trial(tmp_path, monkeypatch):
    """A SIGKILLed trial process leaves its working checkpoint folder; the next trial's removes
    it, and keeps those of processes still alive."""
    import subprocess
    import sys
    import tempfile

    from search.trainable import WORKING_PREFIX, working_checkpoint_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{WORKING_PREFIX}{gone.pid}-abc-x1"
    alive = tmp_path / f"{WORKING_PREFIX}{os.getpid()}-def-x2"
    other = tmp_path / f"{WORKING_PREFIX}notapid"
    for folder in (dead, alive, other):
        (folder / "model").mkdir(parents=True)
    new = working_checkpoint_dir("ghi")
    assert new.is_dir() and new.parent == tmp_path and new.name.startswith(f"{WORKING_PREFIX}{os.getpid()}-ghi-")
    assert not dead.exists() and alive.is_dir() and other.is_dir()
