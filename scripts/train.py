#!/usr/bin/env python
"""Train one run from a YAML file: a JEPA training config (configs/), or a run file naming a
trainer of its own (a contract trainer's best_config.yaml: trainer, name, seed, epochs, config;
search/contract.py).

    python scripts/train.py configs/sixth_run.yaml [--set vq.commitment_cost=0.15 ...]
                            [--seed S] [--epochs E] [--threads T] [--name NAME] [--results DIR] [--resume]

Writes results/runs/<name>/ (config.yaml, command.txt, versions.json, metrics.jsonl, tb/,
checkpoint/, status.json). Without --name, a run whose folder exists gets a fresh name (<name>-2,
-3, ...), so the same command works every time; --name NAME --resume continues one. --seed,
--epochs and --threads set the run's seed, epochs and CPU threads whichever the file's form
(--set takes dotted keys of the file: training.epochs in a JEPA config, config.lr in a run file).
Exit status: 0 completed or early-stopped, 1 diverged, 2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

# Python puts scripts/ first on sys.path, where search.py would shadow the `search` package:
# put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from model.config import ConfigError, config_from_dict, parse_value, read_yaml_mapping, set_dotted  # noqa: E402


def load(path: str, args) -> dict | object:
    """The file with --set and the flags applied: a TrainConfig (JEPA) or a checked run file (a dict)."""
    raw = read_yaml_mapping(path)
    contract = "trainer" in raw
    flags = {"seed": args.seed, "epochs" if contract else "training.epochs": args.epochs, "name": args.name,
             **({} if contract else {"training.num_threads": args.threads})}
    for item in args.overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, e.g. vq.commitment_cost=0.15")
        key, value = item.split("=", 1)
        set_dotted(raw, key.strip(), parse_value(value))
    for key, value in flags.items():
        if value is not None:
            set_dotted(raw, key, value)
    if contract:
        from search.contract import load_trainer, read_run_file

        run = read_run_file(raw, path)
        load_trainer(run["trainer"], f"{path}: trainer")
        return run
    return config_from_dict(raw, source=path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML training config (see configs/) or a contract run file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the file, dotted (repeatable): --set training.epochs=5")
    parser.add_argument("--seed", type=int, help="the run's seed")
    parser.add_argument("--epochs", type=int, help="the run's epochs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (JEPA; a contract trainer sets its own)")
    parser.add_argument("--name", help="run name (default: the file's name)")
    parser.add_argument("--results", default="results/runs", help="parent folder of run folders")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    args = parser.parse_args(argv)
    try:
        loaded = load(args.config, args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = loaded["name"] if isinstance(loaded, dict) else loaded.name
    run_dir = Path(args.results) / name
    if run_dir.exists() and not args.resume:
        if args.name:  # an explicit name is never reused silently
            print(f"error: {run_dir} exists; pass --resume to continue it, or --name NEW for a new run", file=sys.stderr)
            return 2
        # the file's own name is taken (a second run of the same command): a fresh name each time
        taken = run_dir
        run_dir = next(p for i in range(2, 10**6) if not (p := taken.with_name(f"{name}-{i}")).exists())
        loaded = {**loaded, "name": run_dir.name} if isinstance(loaded, dict) else loaded.model_copy(update={"name": run_dir.name})
        print(f"{taken} exists: this run is {run_dir} (continue a run with --name NAME --resume)")

    from model.io import atomic_write_text
    from search.versions import record

    invoked = shlex.join(["python", "scripts/train.py", *(argv if argv is not None else sys.argv[1:])])
    standalone = shlex.join(["python", "scripts/train.py", str(run_dir / "config.yaml"), "--name", f"{run_dir.name}-repro"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "command.txt", f"# as invoked\n{invoked}\n# standalone, from the resolved config\n{standalone}\n")
    record(run_dir)
    print(f"run: {run_dir}")
    if isinstance(loaded, dict):
        status, epochs = train_contract(loaded, run_dir)
    else:
        from model.train import train

        result = train(loaded, run_dir)
        status, epochs = result.status, result.epochs
    print(f"status: {status} after {epochs} epochs; metrics: {run_dir / 'metrics.jsonl'}")
    return 1 if status == "diverged" else 0


def train_contract(run_file: dict, run_dir: Path) -> tuple[str, int]:
    """A run file's trainer through the contract, outside a search: each report printed, each
    reported checkpoint kept in run_dir/checkpoint (what --resume restores)."""
    import math

    import yaml

    from model.io import atomic_write_text
    from search.contract import Diverged, Run, keep_checkpoint, kept_checkpoint, load_trainer
    from search.export import read_jsonl

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(run_file, sort_keys=False))
    restored, kept = kept_checkpoint(run_dir / "checkpoint")
    history = read_jsonl(run_dir / "metrics.jsonl")[:kept]  # a run without a kept checkpoint starts over

    def send(row: dict, checkpoint: Path | None, final: bool) -> None:
        if checkpoint is not None:
            keep_checkpoint(checkpoint, run_dir / "checkpoint", row["epoch"])
        shown = " | ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and math.isfinite(v))
        print(f"epoch {row['epoch']:3d}/{run_file['epochs']} | {shown}", flush=True)

    if restored is not None:
        print(f"resumed from {restored} after epoch {kept}")
    run = Run(run_file["trainer"], run_file["epochs"], run_file["seed"], run_dir, restored, history, send=send,
              names=run_file.get("metrics"))
    diverged = None
    try:
        load_trainer(run_file["trainer"], "trainer")(run_file["config"], run)
    except Diverged as e:  # an infinite value or a NaN loss (search/contract.py)
        diverged = e
        print(f"{run_file['trainer']}: {e}")
    finally:
        status = run.close(diverged=diverged is not None)
    return status, len(run.history)


if __name__ == "__main__":
    sys.exit(main())
