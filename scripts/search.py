#!/usr/bin/env python
"""Search training configs with Ray Tune + Optuna (TPE) + ASHA.

    python scripts/search.py spaces/vq_gentle.yaml [--name NAME] [--storage results]
        [--num-samples N] [--max-epochs E] [--cpu C] [--gpu G] [--max-concurrent K]
        [--no-early-stopping] [--no-final-race] [--address ADDR] [--resume]

Starts Ray locally (dashboard on 127.0.0.1) or joins a cluster (--address, or RAY_ADDRESS).
Writes results/<name>/ with best_config.yaml, which `python scripts/train.py` runs as is: the
exploration's best trial, or, when the space has a `final:` race, the finalist that passed the
most checklist items in its worst fresh seed at the production budget (search/race.py).
Exit status: 0 done, 2 bad input (nothing written), 130 interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

# Python puts scripts/ first on sys.path, where search.py would shadow the `search` package:
# put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from model.config import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", help="search space YAML (see spaces/)")
    parser.add_argument("--name", help="experiment name (default: the space file's name)")
    parser.add_argument("--storage", default="results",
                        help="where experiments go: a folder (default: results; on a multi-node cluster, one "
                        "every node mounts at the same path) or a URI such as s3://bucket/prefix (credentials "
                        "and endpoint from the standard AWS environment variables); with a URI the driver's "
                        "own files are also kept under results/NAME/")
    parser.add_argument("--num-samples", type=int, help="override budget.num_samples")
    parser.add_argument("--max-epochs", type=int, help="override budget.max_epochs")
    parser.add_argument("--cpu", type=float, help="override resources.cpu (CPUs per trial)")
    parser.add_argument("--gpu", type=float, help="override resources.gpu (GPU fraction per trial)")
    parser.add_argument("--max-concurrent", type=int, help="override budget.max_concurrent (0: as resources allow)")
    parser.add_argument("--no-early-stopping", action="store_true",
                        help="override budget.early_stopping: no ASHA, no collapse stopper (every trial runs "
                        "max epochs)")
    parser.add_argument("--address", help="join this Ray cluster (e.g. auto, or 10.0.0.1:6379)")
    parser.add_argument("--dashboard-host", default="127.0.0.1",
                        help="interface the local dashboard binds to (default 127.0.0.1; 0.0.0.0 exposes it)")
    parser.add_argument("--num-gpus", type=int, help="GPUs a local Ray declares (default: detected)")
    parser.add_argument("--no-final-race", action="store_true",
                        help="skip the space's final race (its `final:`): the exploration's best trial is the answer")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        loaded, settings, location = resolve(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from search import ray_env

    ray_env.apply(joining_cluster=bool(args.address or os.environ.get("RAY_ADDRESS")))  # before Ray is imported
    from search.ray_start import start_ray_while_importing

    try:  # Ray starts while the search code (Ray Tune, Optuna, torch) is imported
        ray_started, _ = start_ray_while_importing("search.runner", args.address, args.dashboard_host, args.num_gpus)
    except KeyboardInterrupt:
        print("interrupted before the search started; nothing was kept", file=sys.stderr)
        return 130
    from search.runner import ContractBroken, SearchOptions, format_command, run_search

    exp_dir = location.local
    opts = SearchOptions(exp_dir=exp_dir, remote=location.remote, resume=args.resume, address=args.address,
                         dashboard_host=args.dashboard_host, num_gpus=args.num_gpus,
                         command=format_command([a for a in argv if a != "--resume"]), **settings)
    try:
        best, interrupted = run_search(loaded, opts, ray_started)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ContractBroken as err:  # would repeat in every trial: the search ended at the first
        print(f"error: the trainer broke its contract in trial {err.trial_id} (docs/own_model.md):\n  {err.message}\n"
              f"(the trial's whole error text: {err.record})\n"
              f"the search stopped there; fix the trainer, then continue with:\n  {opts.command} --resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before Ray Tune took over the signal (setup, export)
        if not args.resume and exp_dir.is_dir() and location.remote is None and not (exp_dir / "tuner.pkl").is_file():
            shutil.rmtree(exp_dir)  # nothing resumable was written: leave no half experiment
            print("interrupted before the search started; nothing was kept", file=sys.stderr)
            return 130
        interrupted, best = True, None
    if interrupted:
        print(f"interrupted: the best so far is in {exp_dir}; continue with:\n  {opts.command} --resume",
              file=sys.stderr)
        return 130
    if best is None:
        print(f"no trial produced a result; see {exp_dir}", file=sys.stderr)
        return 1
    print_outcome(best, exp_dir, location.remote)
    return 0


def resolve(args):
    """The space (validated), the search's settings (the space's budget and resources, overridden
    by the flags, checked) and where the experiment goes; ConfigError on anything wrong."""
    from search.space import load_space
    from search.storage import locate

    loaded = load_space(args.space)
    budget, resources = loaded.space.budget, loaded.space.resources
    name = args.name or Path(args.space).stem
    if not NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '_', '-', '.' (a folder directly under {args.storage}/)")
    settings = {"num_samples": budget.num_samples if args.num_samples is None else args.num_samples,
                "max_epochs": budget.max_epochs if args.max_epochs is None else args.max_epochs,
                "cpu": resources.cpu if args.cpu is None else args.cpu,
                "gpu": resources.gpu if args.gpu is None else args.gpu,
                "max_concurrent": budget.max_concurrent if args.max_concurrent is None else args.max_concurrent,
                "early_stopping": budget.early_stopping and not args.no_early_stopping,
                "final": None if args.no_final_race else loaded.space.final}
    for key, flag, low in (("max_concurrent", "--max-concurrent", 0), ("num_samples", "--num-samples", 1),
                           ("max_epochs", "--max-epochs", 1)):
        if settings[key] < low:
            raise ConfigError(f"{flag}: must be >= {low}, got {settings[key]}")
    if settings["cpu"] <= 0 or not 0 <= settings["gpu"] <= 1:
        raise ConfigError(f"--cpu must be > 0 and --gpu in [0, 1], got {settings['cpu']}, {settings['gpu']}")
    location = locate(args.storage, name)
    check_experiment_folder(location, args.resume, args.storage)
    return loaded, settings, location


def check_experiment_folder(location, resume: bool, storage: str) -> None:
    """A new experiment needs a free name; --resume needs an experiment to resume (a folder, or a URI)."""
    from search.storage import remote_exists, remote_file_exists

    exp_dir = location.local
    if location.remote is None:
        if resume and not (exp_dir / "tuner.pkl").is_file():
            raise ConfigError(f"--resume: {exp_dir} holds no experiment to resume")
        if exp_dir.exists() and not resume:
            raise ConfigError(f"{exp_dir} exists: pass --resume to continue that experiment, or --name NEW to start another")
        return
    try:
        stored = remote_exists(location.remote)
        resumable = stored and remote_file_exists(f"{location.remote}/tuner.pkl")
    except OSError as err:  # no such bucket, no credentials, endpoint unreachable
        raise ConfigError(f"--storage {storage}: cannot read {location.remote}: {err}") from None
    if resume and not resumable:
        raise ConfigError(f"--resume: {location.remote} holds no experiment to resume")
    if stored and not resume:
        raise ConfigError(f"{location.remote} exists: pass --resume to continue that experiment, or --name NEW to start another")
    if exp_dir.exists() and not resume:
        raise ConfigError(f"{exp_dir} exists (the local copy of a URI experiment's driver files): pass --name NEW, or remove it")


def print_outcome(best, exp_dir: Path, remote: str | None) -> None:
    """The best trial, its checklist, and where everything is."""
    import json

    from search.report import format_score

    summary = json.loads((exp_dir / "best_trial.json").read_text())
    v, v_seed = summary["verdict"], summary["verdict_seed_targets"]
    print(f"best trial {best.trial_id}: final score {format_score(best.final('score'), True)} ({best.status})")
    where = f" in its exploration trial ({best.last.get('epoch', 0)} epochs, seed of the base config)" if summary.get("final_race") else ""
    print(f"checklist{where}: {v['passed']}/{v['total']} items pass"
          + (f"; failed: {', '.join(v['failed'])}" if v["failed"] else "")
          + (f"; n/a: {', '.join(v['n/a'])}" if v.get("n/a") else "")
          + f" ({v_seed['passed']}/{v_seed['total']} with the seed's literal targets)")
    race = summary.get("final_race")
    if race:
        seeds = ", ".join(str(x) for x in race["seeds"])
        print(f"final race: {race['summary']} (seeds {seeds}; {race['trial_epochs']} of the "
              f"{race['trial_epochs_without_stopping']} trial-epochs a race without stopping runs)")
        for line in race["winner_failures"]:
            print(f"  failed in {line}")
        if race["winner_failures"]:
            print("  no finalist passed every item in every seed: the one that passed most in its worst seed is exported")
    print(f"best config: {exp_dir / 'best_config.yaml'}\n  run it: python scripts/train.py {exp_dir / 'best_config.yaml'}")
    print(f"trials: {exp_dir / 'trials.csv'}; study: sqlite:///{exp_dir / 'study.db'}")
    if remote:
        print(f"experiment stored in {remote} (trial folders, checkpoints and the files above)")


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown of torch, Ray, pandas and the rest (~1 s here,
    bench/search_efficiency.py's "process's exit"): by now every file is written and closed and
    Ray is stopped, so only the console's and the logging's buffers are left to flush."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
