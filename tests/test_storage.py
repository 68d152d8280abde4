"""search/storage.py: where an experiment lives, for a folder and for a URI (no server needed)."""

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
