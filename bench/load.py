#!/usr/bin/env python
"""Load: a search of many trivial trials through the trainer contract, then the same search with
its driver killed halfway and resumed. What it checks and measures:

    exactly N trials in the study (all COMPLETE, no two with the same parameters), N trial folders,
    each trial's epochs recorded once (1..E in its metrics.jsonl): no trial lost or run twice;
    the driver's peak RSS (psutil, sampled every 0.1 s, the driver's process alone), at a fifth of
    the trials and at all of them, to see how it grows;
    the tuning loop's wall time against its floor (N x E x epoch time / concurrent trials) and
    the driver's seconds per trial, beside Ray's own scalability figure;
    a SIGKILL of the driver once half the trials have ended, then `--resume`: the same checks.

    python bench/load.py [--trials 500] [--concurrent 8] [--epochs 2] [--epoch-s 0.1] [--out FILE]

The trainer sleeps `--epoch-s` per epoch and reports a loss (a user's trainer, docs/own_model.md):
the trials cost nothing, so what is measured is the search around them (Ray Tune, Optuna's
SQLite study, our callbacks). Each trial holds 2/concurrent CPUs of the local Ray (2 on this
machine), so `--concurrent` trials run at once. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, emit, shown_command  # noqa: E402

# Ray's published figure for the same kind of test ("Scalability and Overhead Benchmarks for Ray Tune",
# https://docs.ray.io/en/latest/tune/tutorials/tune-scalability.html, first row): 10,000 trials of 1 s
# (1 result each), 1 node of 16 CPUs, observed 715.27 s against a 625 s minimum.
RAY_FIGURE = {"trials": 10_000, "trial_s": 1.0, "concurrent": 16, "wall_s": 715.27, "floor_s": 625.0}

TRAINER = textwrap.dedent("""\
    import time

    def train(config, run):
        for epoch in range(1, run.epochs + 1):
            time.sleep(EPOCH_S)
            run.report({"val/loss": 1.0 / epoch + config["x"], "codebook/usage": 0.5})
""")

SPACE = textwrap.dedent("""\
    trainer: trivial:train
    params:
      x: {{dist: uniform, low: 0, high: 1}}
    objective: {{targets: seed, target_rank_weight: 0.0}}
    budget: {{num_samples: {trials}, max_epochs: {epochs}, grace_period: {epochs}, reduction_factor: 2,
              max_concurrent: {concurrent}}}
    resources: {{cpu: {cpu}}}
    sampler: random
    seed: 0
""")


class PeakRSS(threading.Thread):
    """Samples one process's resident set size every `every` seconds until it ends."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.process, self.every, self.peak = psutil.Process(pid), every, 0

    def run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.every)


def search(folder: Path, name: str, *extra: str, kill_after: int | None = None) -> dict:
    """scripts/search.py on the space in `folder`, in a session of its own (its local Ray with it).
    kill_after: SIGKILL the driver once that many trials have ended (status.json written), then
    its session's processes. Returns wall time, peak RSS, exit status, tuning loop time, output."""
    command = [sys.executable, str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage", "results",
               "--name", name, *extra]
    start = time.time()
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    rss = PeakRSS(proc.pid)
    rss.start()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    ended_at_kill = None
    if kill_after is not None:
        while proc.poll() is None:
            ended = len(list((folder / "results" / name).glob("trial_*/run/status.json")))
            if ended >= kill_after:
                proc.send_signal(signal.SIGKILL)
                ended_at_kill = ended
                break
            time.sleep(0.05)
    proc.wait()
    wall = time.time() - start
    time.sleep(2)  # the killed driver's Ray notices it is gone; then its session is ended for good
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reader.join(timeout=10)
    rss.join(timeout=10)
    out = "".join(lines)
    loop = re.search(r"Total run time: [\d.]+ seconds \(([\d.]+) seconds for the tuning loop\)", out)
    return {"wall_s": wall, "peak_rss_mb": rss.peak / 2**20, "rc": proc.returncode, "output": out,
            "loop_s": float(loop.group(1)) if loop else None, "ended_at_kill": ended_at_kill}


def audit(experiment: Path, trials: int, epochs: int) -> list[str]:
    """What is wrong with a finished experiment of `trials` trials of `epochs` epochs (empty: nothing)."""
    import optuna

    problems = []
    study = optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{experiment / 'study.db'}")
    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    if len(states) != trials or complete != trials:
        problems.append(f"study: {len(states)} trials, {complete} COMPLETE (want {trials})")
    if len({json.dumps(t.params, sort_keys=True) for t in study.trials}) != len(study.trials):
        problems.append("study: two trials with the same parameters")
    folders = sorted(experiment.glob("trial_*"))
    if len(folders) != trials:
        problems.append(f"{len(folders)} trial folders (want {trials})")
    wrong = [f.name for f in folders if [json.loads(x)["epoch"] for x in
             (f / "run" / "metrics.jsonl").read_text().splitlines()] != list(range(1, epochs + 1))]
    if wrong:
        problems.append(f"{len(wrong)} trials whose epochs are not 1..{epochs} once each, e.g. {wrong[:3]}")
    rows = (experiment / "trials.csv").read_text().splitlines()[1:]
    if len(rows) != trials:
        problems.append(f"trials.csv: {len(rows)} rows (want {trials})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-s", type=float, default=0.1, help="the trainer's sleep per epoch")
    parser.add_argument("--keep", help="run in this folder (new or empty) and keep it, to look inside")
    parser.add_argument("--out", help="also write the section to this file")
    args = parser.parse_args(argv)

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "trivial.py").write_text(TRAINER.replace("EPOCH_S", repr(args.epoch_s)))
        (folder / "space.yaml").write_text(SPACE.format(trials=args.trials, epochs=args.epochs,
                                                        concurrent=args.concurrent, cpu=cpus / args.concurrent))
        small_n = max(1, args.trials // 5)  # the driver's memory at a fifth of the trials, to see how it grows
        small = search(folder, "small", "--num-samples", str(small_n))
        whole = search(folder, "whole")
        whole_problems = audit(folder / "results" / "whole", args.trials, args.epochs) if whole["rc"] == 0 else \
            [f"exit {whole['rc']}: {whole['output'][-2000:]}"]
        killed = search(folder, "killed", kill_after=args.trials // 2)
        resumed = search(folder, "killed", "--resume")
        resumed_problems = audit(folder / "results" / "killed", args.trials, args.epochs) if resumed["rc"] == 0 \
            else [f"exit {resumed['rc']}: {resumed['output'][-2000:]}"]
        set_aside = len(list((folder / "results" / "killed" / "orphaned").glob("trial_*")))

    floor = args.trials * args.epochs * args.epoch_s / args.concurrent
    ray_floor, ray = RAY_FIGURE["floor_s"], RAY_FIGURE
    loop = whole["loop_s"]
    lines = [
        f"## Load: {args.trials} trivial trials, {args.concurrent} at once",
        "",
        f"Measured by `{shown_command('load.py', argv)}` at commit {commit()} on {platform.machine()} with "
        f"{cpus} cores (Python {platform.python_version()}). A trial: {args.epochs} epochs of "
        f"{args.epoch_s:g} s sleep through the trainer contract, {cpus / args.concurrent:g} CPU each.",
        "",
        "| run | exit | wall (s) | tuning loop (s) | driver peak RSS (MB) | checks |",
        "|---|---|---|---|---|---|",
        f"| the same, {small_n} trials | {small['rc']} | {small['wall_s']:.1f} | "
        f"{small['loop_s'] if small['loop_s'] is not None else 'n/a'} | {small['peak_rss_mb']:.0f} | |",
        f"| whole search | {whole['rc']} | {whole['wall_s']:.1f} | {loop if loop is not None else 'n/a'} | "
        f"{whole['peak_rss_mb']:.0f} | {'pass' if not whole_problems else '; '.join(whole_problems)} |",
        f"| killed (SIGKILL after {killed['ended_at_kill']} trials ended) | {killed['rc']} | {killed['wall_s']:.1f} "
        f"| n/a | {killed['peak_rss_mb']:.0f} | |",
        f"| `--resume` of it | {resumed['rc']} | {resumed['wall_s']:.1f} | "
        f"{resumed['loop_s'] if resumed['loop_s'] is not None else 'n/a'} | {resumed['peak_rss_mb']:.0f} | "
        f"{'pass' if not resumed_problems else '; '.join(resumed_problems)} |",
        "",
        f"Checks: exactly {args.trials} trials in the study, all COMPLETE, no two with the same parameters; "
        f"{args.trials} trial folders, each with epochs 1..{args.epochs} once; {args.trials} rows in trials.csv. "
        f"The resume set {set_aside} trial folder(s) started after Ray's last snapshot aside (`orphaned/`); "
        "their trials ran again under the study's own trial. "
        f"The driver's peak RSS grew by {whole['peak_rss_mb'] - small['peak_rss_mb']:.0f} MB from {small_n} "
        f"to {args.trials} trials ({(whole['peak_rss_mb'] - small['peak_rss_mb']) * 1024 / max(1, args.trials - small_n):.0f} kB "
        "per trial).",
    ]
    if loop is not None:
        lines += [
            "",
            "| | trials | concurrent | trial (s) | floor (s) | tuning loop (s) | loop / floor | driver s per trial |",
            "|---|---|---|---|---|---|---|---|",
            f"| this search | {args.trials} | {args.concurrent} | {args.epochs * args.epoch_s:g} | {floor:.1f} | "
            f"{loop:.1f} | {loop / floor:.2f} | {loop / args.trials:.3f} |",
            f"| Ray's figure | {ray['trials']} | {ray['concurrent']} | {ray['trial_s']:g} | {ray_floor:.0f} | "
            f"{ray['wall_s']:.0f} | {ray['wall_s'] / ray_floor:.2f} | {ray['wall_s'] / ray['trials']:.3f} |",
            "",
            "Floor: trials x trial time / concurrent trials, the loop's length with no cost around a trial. "
            "With trials this short the loop is the search's own cost per trial (Optuna's ask and tell in "
            "SQLite, Tune's scheduling, our callbacks' atomic writes), on a driver that shares the "
            f"{cpus} cores with the trials.",
        ]
    emit("\n".join(lines) + "\n", args.out)
    return 0 if not whole_problems and not resumed_problems else 1


if __name__ == "__main__":
    sys.exit(main())
