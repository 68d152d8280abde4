#!/usr/bin/env python
"""The study of docs/study.md, one stage at a time (the logic is in search/study.py).

    python scripts/study.py collapse    # the failure-seeking search (spaces/collapse.yaml, goal: collapse)
    python scripts/study.py confirm     # sixth_run and diagnostic_no_vq, 3 seeds x 30 epochs
    python scripts/study.py calibrate   # rank targets from the no-VQ runs -> search/calibrated_targets.yaml
    python scripts/study.py rankcorr    # 16 configs x 2 seeds: rank correlation of the score
    python scripts/study.py main        # the README's main command, its winner verified -> configs/stable_production.yaml
    python scripts/study.py production  # configs/stable_production.yaml, 3 fresh seeds x 80 epochs
    python scripts/study.py reference   # the no-VQ reference judged like the winner: the same seeds, 24 and 80 epochs
    python scripts/study.py unquantized # the production config without its quantizer, judged the same way
    python scripts/study.py fixes       # the seed's fixes, FSQ, counter-measures, context: 3 seeds x 24 epochs
    python scripts/study.py searches    # spaces/quantizer.yaml and spaces/context.yaml searched, winners verified
    python scripts/study.py doc         # docs/study.md from docs/study/*.json (every stage ends with it)

Runs go under results/study/ (and results/study-collapse/ for the search); summaries and plots
under docs/study/. --jobs sets the runs at a time (one thread each).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # scripts/ would shadow the `search` package

STAGES = ("collapse", "confirm", "calibrate", "rankcorr", "main", "production", "reference", "unquantized", "fixes", "searches", "doc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--jobs", type=int, default=2, help="runs (or trials) at a time, one thread each")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be >= 1", file=sys.stderr)
        return 2
    from search.study import run_stage

    run_stage(args.stage, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
