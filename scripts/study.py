#!/usr/bin/env python
"""The study of docs/study.md, one stage at a time: `python scripts/study.py STAGE [--jobs N]`
(the same as `python -m study STAGE`); `python scripts/study.py --help` lists the stages
(study/stages.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # scripts/ would shadow the `search` package

from study.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
