#!/usr/bin/env python
"""Search training configs with Ray Tune + Optuna (TPE) + ASHA.

    python scripts/search.py spaces/vq_gentle.yaml [--name NAME] [--storage results]
        [--num-samples N] [--max-epochs E] [--cpu C] [--gpu G] [--max-concurrent K]
        [--no-early-stopping] [--address ADDR] [--resume]

Starts Ray locally (dashboard on 127.0.0.1) or joins a cluster (--address, or RAY_ADDRESS).
Writes results/<name>/ with best_config.yaml, which `python scripts/train.py` runs as is.
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
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    from search.space import load_space

    try:
        loaded = load_space(args.space)
        budget, resources = loaded.space.budget, loaded.space.resources
        name = args.name or Path(args.space).stem
        if not NAME.match(name):
            raise ConfigError(f"--name {name!r}: use letters, digits, '_', '-', '.' (a folder directly "
                              f"under {args.storage}/)")
        num_samples = args.num_samples if args.num_samples is not None else budget.num_samples
        max_epochs = args.max_epochs if args.max_epochs is not None else budget.max_epochs
        cpu = args.cpu if args.cpu is not None else resources.cpu
        gpu = args.gpu if args.gpu is not None else resources.gpu
        max_concurrent = args.max_concurrent if args.max_concurrent is not None else budget.max_concurrent
        early_stopping = budget.early_stopping and not args.no_early_stopping
        if max_concurrent < 0:
            raise ConfigError(f"--max-concurrent: must be >= 0, got {max_concurrent}")
        if num_samples < 1:
            raise ConfigError(f"--num-samples: must be >= 1, got {num_samples}")
        if max_epochs < 1:
            raise ConfigError(f"--max-epochs: must be >= 1, got {max_epochs}")
        if cpu <= 0 or not 0 <= gpu <= 1:
            raise ConfigError(f"--cpu must be > 0 and --gpu in [0, 1], got {cpu}, {gpu}")
        from search.storage import locate, remote_exists, remote_file_exists

        location = locate(args.storage, name)
        exp_dir = location.local
        if location.remote is None:
            if args.resume and not (exp_dir / "tuner.pkl").is_file():
                raise ConfigError(f"--resume: {exp_dir} holds no experiment to resume")
            if exp_dir.exists() and not args.resume:
                raise ConfigError(f"{exp_dir} exists: pass --resume to continue that experiment, "
                                  f"or --name NEW to start another")
        else:
            try:
                stored = remote_exists(location.remote)
                resumable = stored and remote_file_exists(f"{location.remote}/tuner.pkl")
            except OSError as err:  # no such bucket, no credentials, endpoint unreachable
                raise ConfigError(f"--storage {args.storage}: cannot read {location.remote}: {err}") from None
            if args.resume and not resumable:
                raise ConfigError(f"--resume: {location.remote} holds no experiment to resume")
            if stored and not args.resume:
                raise ConfigError(f"{location.remote} exists: pass --resume to continue that experiment, "
                                  f"or --name NEW to start another")
            if exp_dir.exists() and not args.resume:
                raise ConfigError(f"{exp_dir} exists (the local copy of a URI experiment's driver files): "
                                  f"pass --name NEW, or remove it")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.address or os.environ.get("RAY_ADDRESS"):
        # `ray start` in 2.60 turns token auth on, but a client sends its token only with
        # RAY_AUTH_MODE=token; Ray reads it when imported, so set it first (a cluster without
        # auth: export RAY_AUTH_MODE=disabled).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from search.runner import SearchOptions, format_command, run_search

    opts = SearchOptions(exp_dir=exp_dir, remote=location.remote, num_samples=num_samples, max_epochs=max_epochs, cpu=cpu, gpu=gpu,
                         resume=args.resume, address=args.address, dashboard_host=args.dashboard_host,
                         num_gpus=args.num_gpus, max_concurrent=max_concurrent, early_stopping=early_stopping,
                         command=format_command([a for a in argv if a != "--resume"]))
    try:
        best, interrupted = run_search(loaded, opts)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
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
    import json

    from search.report import format_score

    summary = json.loads((exp_dir / "best_trial.json").read_text())
    v, v_seed = summary["verdict"], summary["verdict_seed_targets"]
    print(f"best trial {best.trial_id}: final score {format_score(best.final('score'), True)} "
          f"({best.status})")
    print(f"checklist: {v['passed']}/{v['total']} items pass"
          + (f"; failed: {', '.join(v['failed'])}" if v["failed"] else "")
          + f" ({v_seed['passed']}/{v_seed['total']} with the seed's literal targets)")
    print(f"best config: {exp_dir / 'best_config.yaml'}\n  run it: python scripts/train.py {exp_dir / 'best_config.yaml'}")
    print(f"trials: {exp_dir / 'trials.csv'}; study: sqlite:///{exp_dir / 'study.db'}")
    if location.remote:
        print(f"experiment stored in {location.remote} (trial folders, checkpoints and the files above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
