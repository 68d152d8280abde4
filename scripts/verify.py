#!/usr/bin/env python
"""Was the winner luck? (search/verify.py) Retrain the best trial (and the runner-up) from scratch with fresh seeds.

    python scripts/verify.py results/<experiment> [--seeds 3] [--top 2] [--epochs E] [--jobs 2]

Each of the top trials (by final score; after a final race, the race's finalists in its order, at
its production epochs) is retrained from its own resolved config for its full epochs (or --epochs)
with seeds 1000, 1001, ... (never the search's nor its race's, 2000, 2001, ...), under
results/<experiment>/verify/. Its metrics are on the held-out validation tasks, as in every run.
Writes verify.json (mean, spread and pass rate of each checklist item per trial, and the versions
it ran with) and refreshes report.md, which then includes it. Says so when torch, ray, optuna or
numpy differ from the experiment's versions.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # scripts/ would shadow the `search` package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="results/<experiment> folder, or the experiment's URI "
                        "(s3://bucket/prefix/<experiment>: mirrored into results/<experiment>, outputs uploaded back)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--top", type=int, default=2, help="how many of the best trials (default: best and runner-up)")
    parser.add_argument("--epochs", type=int, help="override the trials' epochs (default: their full budget)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    args = parser.parse_args(argv)
    from search.export import require_experiment_folder

    exp_dir = require_experiment_folder(args.experiment).resolve()  # absolute: the runs may start elsewhere
    if args.seeds < 1 or args.top < 1 or (args.epochs is not None and args.epochs < 1):
        print("error: --seeds, --top and --epochs must be >= 1", file=sys.stderr)
        return 2

    from search.verify import verify, verify_plan
    from search.versions import drift

    for line in drift(exp_dir):
        print(f"note: verifying with {line}: a difference from the search's figures may come from it too")
    plan = verify_plan(exp_dir, args.top, args.seeds, args.epochs)
    command = shlex.join(["python", "scripts/verify.py", *(argv if argv is not None else sys.argv[1:])])
    report, runs = verify(exp_dir, plan, Path(__file__).with_name("train.py"), args.jobs, command)
    for run in runs:
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    for trial_id, items in report["trials"].items():
        print(f"trial {trial_id}:")
        for item, s in items.items():
            rate = "n/a " if s["pass_rate"] is None else f"{s['pass_rate']:4.0%}"
            print(f"  {item:32s} pass {rate}  mean {s['mean']:.4g}  std {s['std']:.3g}")
    print(f"wrote {exp_dir / 'verify.json'} and {exp_dir / 'report.md'}")
    from search.export import publish
    from search.storage import DRIVER_FILES

    if publish(args.experiment, [*DRIVER_FILES, "verify"]):
        print(f"uploaded them and the runs under verify/ to {args.experiment}")
    return 0 if all(not r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
