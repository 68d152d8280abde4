#!/usr/bin/env python
"""Write results/<experiment>/report.md with its plots (curves.png, params.png, importance.png).

    python scripts/report.py results/<experiment> [--top 10]

Also run at the end of every search. Reads only the experiment folder.
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
    parser.add_argument("--top", type=int, default=10, help="rows in the top-trials table")
    args = parser.parse_args(argv)
    from search.export import require_experiment_folder

    exp_dir = require_experiment_folder(args.experiment)

    from search.report import write_report

    print(f"wrote {write_report(exp_dir, args.top)}")
    from search.export import publish

    if publish(args.experiment):
        print(f"uploaded it to {args.experiment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
