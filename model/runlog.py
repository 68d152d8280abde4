"""What a training run writes as it goes, in one place: metrics.jsonl, the TensorBoard run, the
console line and timing.json. Every trainer's run writes through it: the JEPA's (model/train.py)
and a contract trainer's (search/contract.py: Run, with no console line of its own).

    run_dir/metrics.jsonl   one JSON line per epoch (rewritten from the checkpoint's history on a
                            resume, so no epoch is logged twice)
    run_dir/tb/             TensorBoard events: the epoch's scalars, any extra scalars the caller
                            hands in (the search's score), and the run's hyperparameters
    run_dir/timing.json     this process's start-up, as wall-clock times (time.time()): called,
                            data_ready, model_ready, first_step (written after its first epoch)

One TensorBoard writer per run: two writers on one run make TensorBoard purge the steps it sees
go backwards.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

from model.io import atomic_write_json, atomic_write_text


def format_line(m: dict, epochs: int) -> str:
    """The console line of an epoch."""
    usage = m["codebook/usage"]
    usage_text = "   n/a" if math.isnan(usage) else f"{100 * usage:5.1f}%"
    return (f"epoch {m['epoch']:3d}/{epochs} | train {m['train/loss']:.4f} | val {m['val/loss']:.4f} | "
            f"usage {usage_text} | rank ctx {m['rank/context']:5.1f} tgt {m['rank/target']:5.1f} | "
            f"iso {m['isotropy/context']:.3f}/{m['isotropy/target']:.3f} | "
            f"grad {m['grad/norm_mean']:.2f}/{m['grad/norm_max']:.2f} | tau {m['temperature']:.3f} | "
            f"{m['time/epoch_s']:.1f}s")


class RunLog:
    """line(metrics, epochs): an epoch's console line (format_line: the JEPA's), printed by `log`;
    None: no console line (a contract trainer's epochs are shown by whoever receives them)."""

    def __init__(self, run_dir: Path, epochs: int, history: list[dict], log: Callable[[str], None] = print,
                 line: Callable[[dict, int], str] | None = format_line):
        self.run_dir, self.epochs, self.log, self.line = Path(run_dir), epochs, log, line
        self.timing = {"called": time.time()}
        self.first_epoch = len(history) + 1  # the first epoch this process runs: timing.json after it
        self.writer = None
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))

    def mark(self, event: str) -> None:
        """The wall-clock time of a start-up event (data_ready, model_ready, first_step), once."""
        self.timing.setdefault(event, time.time())

    def open_tensorboard(self, hparams: dict | None = None, hparam_metrics: tuple[str, ...] = ()) -> None:
        """The run's TensorBoard writer; at a fresh start, `hparams` (name -> value) are declared for
        the HParams view with `hparam_metrics` (names of scalars the run logs) as its metrics."""
        from torch.utils.tensorboard import SummaryWriter  # lazy: ~1 s import

        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.first_epoch)
        if hparams is not None and self.first_epoch == 1:  # before any scalar: step 0 never goes backwards
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            shown = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
            experiment, session_start, _ = hparams_summary(shown, {m: math.nan for m in hparam_metrics})
            for summary in (experiment, session_start):
                self.writer.file_writer.add_summary(summary)

    def epoch(self, metrics: dict, extra: Callable[[], dict[str, float]] | None = None) -> None:
        """An epoch's line in metrics.jsonl, then its scalars and the caller's extra ones (the
        search's score of the run so far) in TensorBoard, its console line; timing.json after this
        process's first epoch."""
        if metrics["epoch"] == self.first_epoch:
            atomic_write_json(self.run_dir / "timing.json", self.timing)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        for key, value in {**metrics, **(extra() if extra is not None else {})}.items():
            if key != "epoch" and math.isfinite(value):
                self.writer.add_scalar(key, value, metrics["epoch"])
        self.writer.flush()
        if self.line is not None:
            self.log(self.line(metrics, self.epochs))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
