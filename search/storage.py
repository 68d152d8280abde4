"""Where an experiment lives: a local (or shared) folder, or a URI in object storage.

`--storage` takes either. With a folder, everything is under <folder>/<name>/, as before. With a
URI (`s3://bucket/prefix`, `gs://bucket/prefix`, or any URI pyarrow's FileSystem.from_uri reads;
S3 endpoint and credentials from the standard AWS environment variables, e.g.
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID), Ray Tune writes the experiment itself (trial folders,
checkpoints, experiment state) to <uri>/<name>/, from whichever node runs each trial. The
driver's own files (study.db, targets.json, space.yaml, command.txt, best_config.yaml,
best_trial.json, trials.csv, report.md and its plots) are written under a local
results/<name>/ and uploaded beside the experiment; export, report, verify and --resume first
mirror <uri>/<name>/ into results/<name>/ and work there.

We write no storage layer: reading and writing a URI is pyarrow.fs (which Ray Tune uses too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCAL_ROOT = Path("results")  # where a URI experiment's driver files and mirror live


def is_uri(storage: str) -> bool:
    """'s3://bucket/prefix' -> True; 'results' or '/mnt/shared/results' -> False."""
    return "://" in storage


@dataclass(frozen=True)
class Location:
    local: Path  # <folder>/<name>, or results/<name> for a URI experiment (driver files + mirror)
    remote: str | None = None  # <uri>/<name>, or None for a folder experiment

    @property
    def ray_storage_path(self) -> str:
        """RunConfig.storage_path: the parent of the experiment, a URI or an absolute folder."""
        return self.remote.rsplit("/", 1)[0] if self.remote else str(self.local.resolve().parent)

    @property
    def ray_experiment_path(self) -> str:
        """What Tuner.restore reads."""
        return self.remote or str(self.local.resolve())

    @property
    def shown(self) -> str:
        return self.remote or str(self.local)


def locate(storage: str, name: str, local_root: Path = LOCAL_ROOT) -> Location:
    """The experiment `name` under `storage` (a folder or a URI)."""
    if is_uri(storage):
        return Location(local=local_root / name, remote=f"{storage.rstrip('/')}/{name}")
    return Location(local=Path(storage) / name)


def locate_experiment(path: str, local_root: Path = LOCAL_ROOT) -> Location:
    """An experiment given as a folder or as a URI (<uri>/<name>), as the scripts take it."""
    if is_uri(path):
        return Location(local=local_root / path.rstrip("/").rsplit("/", 1)[-1], remote=path.rstrip("/"))
    return Location(local=Path(path))


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def remote_exists(uri: str) -> bool:
    """Whether anything is stored at or under uri."""
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def remote_file_exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def download(loc: Location) -> None:
    """Mirror <uri>/<name>/ into the local folder (files present remotely overwrite local ones)."""
    import pyarrow.fs

    if loc.remote is None:
        return
    loc.local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(loc.remote, str(loc.local.resolve()))


def upload(loc: Location, names: list[str]) -> list[str]:
    """Copy the driver's files (names relative to the local folder; files or folders) beside the
    experiment in storage; returns the names copied."""
    import pyarrow.fs

    if loc.remote is None:
        return []
    fs, root = _fs(loc.remote)
    done = []
    for name in names:
        source = loc.local / name
        if source.is_file() or source.is_dir():
            if isinstance(fs, pyarrow.fs.LocalFileSystem):  # object stores have no folders to make
                folders = [source, *(d for d in source.rglob("*") if d.is_dir())] if source.is_dir() else [source.parent]
                for d in folders:
                    fs.create_dir(f"{root}/{d.relative_to(loc.local)}", recursive=True)
            pyarrow.fs.copy_files(str(source.resolve()), f"{loc.remote}/{name}")
            done.append(name)
    return done


def set_aside(loc: Location, names: list[str], folder: str = "orphaned") -> None:
    """Move the trial folders `names` of the experiment into <experiment>/<folder>/, in storage
    (a URI: copy, then delete) and in the local folder, where the experiment's readers
    (search/export.py: read_trials, one level deep) no longer count them."""
    import shutil

    import pyarrow.fs

    if loc.remote is not None:
        fs, root = _fs(loc.remote)
        for name in names:
            if fs.get_file_info(f"{root}/{name}").type != pyarrow.fs.FileType.Directory:
                continue
            if isinstance(fs, pyarrow.fs.LocalFileSystem):
                fs.create_dir(f"{root}/{folder}", recursive=True)
                fs.move(f"{root}/{name}", f"{root}/{folder}/{name}")
            else:  # object stores move no folders (pyarrow's S3 move is per object): copy, then delete
                pyarrow.fs.copy_files(f"{loc.remote}/{name}", f"{loc.remote}/{folder}/{name}")
                fs.delete_dir(f"{root}/{name}")
    for name in names:
        if (loc.local / name).is_dir():
            (loc.local / folder).mkdir(parents=True, exist_ok=True)
            shutil.rmtree(loc.local / folder / name, ignore_errors=True)
            shutil.move(loc.local / name, loc.local / folder / name)


# The driver's own files, uploaded beside a URI experiment after each export.
DRIVER_FILES = ["study.db", "targets.json", "space.yaml", "command.txt", "best_config.yaml", "best_trial.json",
                "trials.csv", "report.md", "curves.png", "params.png", "importance.png", "pareto.png",
                "verify.json", "search_time.json", "versions.json", "race_plan.json", "race.json"]
