#!/usr/bin/env python
"""Re-export best_config.yaml, best_trial.json and trials.csv from an experiment folder.

    python scripts/export_best.py results/<experiment> [--metric score] [--mode max] [--reduce last|best]

Works on finished and interrupted experiments (reads only the files on disk).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Python puts scripts/ first on sys.path, where search.py would shadow the `search` package:
# put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="results/<experiment> folder, or the experiment's URI "
                        "(s3://bucket/prefix/<experiment>: mirrored into results/<experiment>, outputs uploaded back)")
    parser.add_argument("--metric", default="score", help="any reported key (default: score)")
    parser.add_argument("--mode", choices=["max", "min"],
                        help="default: the experiment's goal (max for health, min for a collapse search)")
    parser.add_argument("--reduce", choices=["last", "best"], default="last",
                        help="rank trials by the metric at their last epoch (default, the search's "
                        "objective) or by its best value over the run")
    args = parser.parse_args(argv)
    from search.export import require_experiment_folder

    exp_dir = require_experiment_folder(args.experiment)

    from search.export import export_best

    best = export_best(exp_dir, args.metric, args.mode, args.reduce)
    from search.targets import read_judging

    args.mode = args.mode or read_judging(exp_dir).mode
    if best is None:
        print(f"error: {exp_dir}: no trial reported {args.metric}", file=sys.stderr)
        return 1
    print(f"best trial {best.trial_id} by {args.reduce} {args.metric} ({args.mode}): "
          f"{best.value(args.metric, args.mode, args.reduce):.4f}")
    print(f"wrote {exp_dir / 'best_config.yaml'}, {exp_dir / 'best_trial.json'}, {exp_dir / 'trials.csv'}")
    from search.export import publish

    if publish(args.experiment):
        print(f"uploaded them to {args.experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
