"""python -m study STAGE [--jobs N]: one stage of the study (study/stages.py lists them)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from study.stages import STAGES, run_stage

    parser = argparse.ArgumentParser(
        prog="python scripts/study.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The study of docs/study.md, one stage at a time. Runs go under results/study/ (and "
        "results/study-*/ for searches); summaries and plots under docs/study/.\n\n"
        + "\n".join(f"  {s.name:12s} {s.help}" for s in STAGES))
    parser.add_argument("stage", choices=[s.name for s in STAGES])
    parser.add_argument("--jobs", type=int, default=2, help="runs (or trials) at a time, one thread each")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be >= 1", file=sys.stderr)
        return 2
    run_stage(args.stage, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
