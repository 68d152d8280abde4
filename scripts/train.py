#!/usr/bin/env python
"""Train one JEPA run from a YAML config.

    python scripts/train.py configs/sixth_run.yaml [--set vq.commitment_cost=0.15 ...]
                            [--name NAME] [--results DIR] [--resume]

Writes results/runs/<name>/ (config.yaml, command.txt, versions.json, metrics.jsonl, tb/,
checkpoint/, status.json). Without --name, a run whose folder exists gets a fresh name (<name>-2, -3, ...), so
the same command works every time; --name NAME --resume continues one. Exit status: 0 completed
or early-stopped, 1 diverged, 2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

# Python puts scripts/ first on sys.path, where search.py would shadow the `search` package:
# put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from model.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML training config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted (repeatable): --set training.epochs=5")
    parser.add_argument("--name", help="run name (default: the config's name)")
    parser.add_argument("--results", default="results/runs", help="parent folder of run folders")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    args = parser.parse_args(argv)

    try:
        overrides = args.overrides + ([f"name={args.name}"] if args.name else [])
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = Path(args.results) / cfg.name
    if run_dir.exists() and not args.resume:
        if args.name:  # an explicit name is never reused silently
            print(f"error: {run_dir} exists; pass --resume to continue it, or --name NEW for a new run",
                  file=sys.stderr)
            return 2
        # the config's own name is taken (a second run of the same command): a fresh name each time
        taken = run_dir
        run_dir = next(p for i in range(2, 10**6) if not (p := taken.with_name(f"{cfg.name}-{i}")).exists())
        cfg = cfg.model_copy(update={"name": run_dir.name})
        print(f"{taken} exists: this run is {run_dir} (continue a run with --name NAME --resume)")

    from model.io import atomic_write_text
    from model.train import train

    invoked = shlex.join(["python", "scripts/train.py", *(argv if argv is not None else sys.argv[1:])])
    standalone = shlex.join(["python", "scripts/train.py", str(run_dir / "config.yaml"),
                             "--name", f"{cfg.name}-repro"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "command.txt",
                      f"# as invoked\n{invoked}\n# standalone, from the resolved config\n{standalone}\n")
    from search.versions import record

    record(run_dir)
    print(f"run: {run_dir}")
    result = train(cfg, run_dir)
    print(f"status: {result.status} after {result.epochs} epochs; metrics: {run_dir / 'metrics.jsonl'}")
    return 1 if result.status == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main())
