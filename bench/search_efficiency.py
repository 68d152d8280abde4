#!/usr/bin/env python
"""Search efficiency on this machine: overhead, ASHA against no early stopping, Ray Tune against
plain Optuna, 1 against 2 concurrent trials, and the fixed costs as the search grows. Four
searches of one space (spaces/bench.yaml by default; its budget and sampler seed, judged by its
objective's targets), then asha and optuna again with 2x and 4x the trials (--sizes):

    asha     scripts/search.py SPACE                                  2 trials at a time, 1 CPU each
    no-es    scripts/search.py SPACE --no-early-stopping              every trial runs 8 epochs
    serial   scripts/search.py SPACE --max-concurrent 1 --cpu 2       1 trial at a time, 2 threads
    optuna   plain Optuna in this process: TPESampler(seed) + HyperbandPruner(grace, max, rf),
             study.optimize over model.train.train, 2 torch threads (no Ray)

    python bench/search_efficiency.py [--space spaces/bench.yaml] [--num-samples N] [--max-epochs E]
                                      [--sizes 2,4] [--out FILE]

Measured from what the runs leave on disk: the trainer's per-epoch `time/train_s` (inside
training steps) and `time/eval_s`, each trial's run/placement.json (when its worker took it, trainable
start, end) and run/timing.json (data ready, first step), Ray's result.json (report times).
Prints Markdown sections; --out writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import commit, emit, shown_command  # noqa: E402
from search.targets import SEED, Targets  # noqa: E402

RAY_RUNS = {  # name -> extra scripts/search.py arguments
    "asha": [],
    "no-es": ["--no-early-stopping"],
    "serial": ["--max-concurrent", "1", "--cpu", "2"],
}


@dataclass
class Trial:
    """One trial as the analysis needs it, from a Ray trial folder or the Optuna peer."""

    history: list[dict]  # the trainer's per-epoch metrics
    scores: list[float]  # the objective's score per reported epoch
    report_times: list[float]  # wall-clock time of each report
    cpus: float  # cores the trial held
    timing: dict = field(default_factory=dict)  # assigned, start, data_ready, first_step, end (+ Ray's)
    iter_s: list[float] = field(default_factory=list)  # seconds between the trial's reports (Ray's time_this_iter_s)
    worker_trials: int = 1  # the trial's place in its worker's sequence (1: a fresh process)

    @property
    def final(self) -> float:
        return self.scores[-1] if self.scores else -math.inf


@dataclass
class Run:
    name: str
    wall_s: float
    started: float  # wall-clock time the search was launched
    cpus: int  # cores the search had
    trials: list[Trial]
    max_epochs: int
    checkpoint_bytes: int = 0  # size of one reported checkpoint (Ray runs)
    phases: dict = field(default_factory=dict)  # the search's own record (search_time.json): ray_ready, ...
    targets: Targets = SEED  # the bars the checklist judges the trials by (the space's objective)


# ---- reading a finished search ---------------------------------------------------------------

def read_ray_run(name: str, exp_dir: Path, wall_s: float, started: float, cpus: int, max_epochs: int) -> Run:
    from search.export import read_trials

    trials = []
    for record in read_trials(exp_dir):
        run = record.path / "run"
        placement = json.loads((run / "placement.json").read_text())
        timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        reports = [r for r in record.results if "score" in r]
        trials.append(Trial(history, [r["score"] for r in reports], [float(r["timestamp"]) for r in reports],
                            cpus=float(placement["num_threads"]),
                            timing={**timing, "assigned": placement["worker_assigned"],
                                    "start": placement["start"], "end": placement.get("end", math.nan)},
                            iter_s=[float(r["time_this_iter_s"]) for r in reports],
                            worker_trials=int(placement["worker_trials"])))
    sizes = [f.stat().st_size for f in exp_dir.glob("*/checkpoint_*/state.pt")]
    phases = json.loads((exp_dir / "search_time.json").read_text())["sessions"][0]
    from search.targets import read_judging

    return Run(name, wall_s, started, cpus, trials, max_epochs, max(sizes, default=0), phases,
               read_judging(exp_dir).targets)


def run_ray_search(name: str, space: str, budget, extra: list[str], storage: Path) -> tuple[float, float]:
    """scripts/search.py as a user runs it; -> (wall seconds, launch time)."""
    command = [sys.executable, str(ROOT / "scripts" / "search.py"), space, "--storage", str(storage),
               "--name", name, "--num-samples", str(budget.num_samples), "--max-epochs", str(budget.max_epochs),
               *extra]
    started = time.time()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, started


def run_optuna_peer(space_path: str, budget, workdir: Path, threads: int) -> Run:
    """The peer a user would otherwise write: one process, study.optimize, the same trainer."""
    import optuna
    import torch

    from model.train import train
    from search.score import DIVERGED_SCORE, objective_score
    from search.space import DefineByRun, load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_space(space_path)
    space = loaded.space
    define = DefineByRun(space.params)
    trials: list[Trial] = []

    def objective(ot_trial) -> float:
        constants = define(ot_trial)
        params = {**ot_trial.params, **constants}  # as Ray's OptunaSearch merges them
        cfg = loaded.trial_config(params, epochs=budget.max_epochs, name=f"peer{ot_trial.number}",
                                  num_threads=threads)
        trial = Trial([], [], [], cpus=threads, timing={"assigned": time.time(), "start": time.time()})
        trials.append(trial)

        def on_epoch(metrics: dict, checkpoint_dir: Path, final: bool) -> None:
            trial.iter_s.append(time.time() - (trial.report_times[-1] if trial.report_times else trial.timing["start"]))
            trial.history.append(metrics)
            trial.scores.append(objective_score(trial.history, budget.max_epochs, space.objective))  # as the trainable
            trial.report_times.append(time.time())
            ot_trial.report(trial.scores[-1], metrics["epoch"])
            if not final and ot_trial.should_prune():
                raise optuna.TrialPruned()

        run_dir = workdir / cfg.name
        try:
            result = train(cfg, run_dir, on_epoch=on_epoch, log=lambda line: None)
        finally:
            trial.timing.update(json.loads((run_dir / "timing.json").read_text())
                                if (run_dir / "timing.json").is_file() else {})
            trial.timing["end"] = time.time()
        if result.status == "diverged":
            trial.scores.append(DIVERGED_SCORE)
            trial.report_times.append(time.time())
            return DIVERGED_SCORE
        return trial.scores[-1]

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=space.seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=budget.grace_period, max_resource=budget.max_epochs,
                                              reduction_factor=budget.reduction_factor))
    threads_before = torch.get_num_threads()
    started = time.time()
    study.optimize(objective, n_trials=budget.num_samples)
    wall = time.time() - started
    torch.set_num_threads(threads_before)
    return Run("optuna", wall, started, threads, trials, budget.max_epochs, targets=space.objective.resolved_targets())


# ---- figures ---------------------------------------------------------------------------------

def trial_epochs(run: Run) -> int:
    return sum(len(t.history) for t in run.trials)


def best_final(run: Run) -> float:
    return max((t.final for t in run.trials), default=-math.inf)


def core_seconds(run: Run, key: str) -> float:
    """Sum over trials and epochs of a per-epoch time, times the cores the trial held."""
    return sum(t.cpus * sum(h[key] for h in t.history) for t in run.trials)


def startup_s(trial: Trial) -> float:
    """From the moment a worker takes the trial (its process start, or the reset of a reused
    worker; the trial's start in the Optuna peer) to the trial's first training step."""
    return trial.timing["first_step"] - trial.timing["assigned"]


def startup_core_seconds(run: Run) -> float:
    return sum(t.cpus * startup_s(t) for t in run.trials if "first_step" in t.timing)


def epoch_overhead(run: Run) -> float:
    """Median over trial-epochs after a trial's first of the time between its reports outside the
    epoch's training and evaluation (the report, checkpoint, TensorBoard and metrics files), as a
    share of the epoch's time."""
    shares_ = [(gap - h["time/epoch_s"]) / h["time/epoch_s"]
               for t in run.trials for gap, h in list(zip(t.iter_s, t.history))[1:]]
    return statistics.median(shares_) if shares_ else math.nan


def time_to_reach(run: Run, target: float) -> float | None:
    """Seconds from the search's launch until a trial ends with a final score >= target."""
    ends = [t.report_times[-1] for t in run.trials if t.report_times and t.final >= target]
    return min(ends) - run.started if ends else None


def epochs_to_reach(run: Run, target: float) -> int | None:
    """Trial-epochs spent, in report order over all trials, until a trial ends with a final score
    >= target (None if none does). A trial's objective is its score at its last report."""
    events = sorted((time_, i, j) for i, t in enumerate(run.trials) for j, time_ in enumerate(t.report_times))
    spent = 0
    for _, i, j in events:
        spent += 1
        trial = run.trials[i]
        if j == len(trial.report_times) - 1 and trial.final >= target:
            return spent
    return None


def most_checklist_items(run: Run) -> str:
    """The most items of the checklist (the run's targets) that one trial met, as 'met/applicable'."""
    from search.judge import checklist, verdict

    verdicts = [verdict(checklist(t.history, run.max_epochs, run.targets)) for t in run.trials if t.history]
    best = max(verdicts, key=lambda v: v["passed"])
    return f"{best['passed']}/{best['total']}"


def first_checklist_pass_s(run: Run) -> float | None:
    """Seconds from the search's launch until the first trial that meets the checklist (the run's
    targets) ended."""
    from search.judge import judge

    ends = [t.timing["end"] for t in run.trials if t.history and judge(t.history, run.max_epochs, run.targets).passed_all]
    return min(ends) - run.started if ends else None


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def shares(run: Run) -> dict[str, float]:
    """Shares of wall time x cores: training steps, evaluation, trial start-up, and the rest."""
    total = run.wall_s * run.cpus
    parts = {"training steps": core_seconds(run, "time/train_s") / total,
             "evaluation": core_seconds(run, "time/eval_s") / total,
             "trial start-up": startup_core_seconds(run) / total}
    first = min(t.timing["assigned"] for t in run.trials)
    last = max(t.timing["end"] for t in run.trials)
    parts["search start and finish"] = ((first - run.started) + (run.started + run.wall_s - last)) / run.wall_s
    parts["the rest"] = 1 - sum(parts.values())
    return parts


def overhead_section(runs: list[Run]) -> list[str]:
    lines = ["## Search overhead", "",
             "Where the cores went: core-seconds (seconds x the cores a trial holds) as a share of wall time "
             "x the machine's cores. Start-up runs from the moment a worker takes the trial (its process start, or "
             "the reset of a reused worker) to its first training step.",
             "Search start and finish: before the first trial starts (Ray starting, the study) and after the "
             "last one ends (Ray stopping, export, report). The rest: reports, checkpoints, scheduling and "
             "cores left idle while trials wait on one another.",
             "", "| search | wall | trial-epochs | training steps | evaluation | trial start-up | search start "
             "and finish | the rest |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.name} | {fmt_s(run.wall_s)} | {trial_epochs(run)} | "
                     + " | ".join(f"{v:.0%}" for v in shares(run).values()) + " |")
    asha = runs[0]
    fresh = [t for t in asha.trials if t.worker_trials == 1]
    reused = [t for t in asha.trials if t.worker_trials > 1]
    phases = [("worker takes the trial -> trainable (a fresh worker: Ray worker start and unpickling the "
               "trainable; a reused one: Ray's reset)", "assigned", "start"),
              ("trainable -> data ready (imports of torch and the model, ARC data: from the on-disk cache in a "
               "fresh worker, already loaded in a reused one)", "start", "data_ready"),
              ("data ready -> first step (model, optimiser, TensorBoard writer)", "data_ready", "first_step")]
    lines += ["", f"Start-up of the {len(asha.trials)} trials of `{asha.name}`: {len(reused)} ran in a worker process "
              f"that had run another trial (Ray's `reuse_actors`), {len(fresh)} in a fresh one.", "",
              "| phase | fresh worker: median | max | reused worker: median | max |", "|---|---|---|---|---|"]

    def cells(trials: list[Trial], a: str, b: str) -> str:
        values = [t.timing[b] - t.timing[a] for t in trials if a in t.timing and b in t.timing]
        return (f"{statistics.median(values):.2f} s | {max(values):.2f} s" if values else "none | none")

    for label, a, b in phases + [("start-up: worker takes the trial -> first step", "assigned", "first_step")]:
        lines.append(f"| {label} | {cells(fresh, a, b)} | {cells(reused, a, b)} |")
    epoch_s = statistics.median(h["time/epoch_s"] for t in asha.trials for h in t.history)
    epochs = statistics.median(len(t.history) for t in asha.trials)
    lines += ["", f"A trial-epoch takes {epoch_s:.1f} s (median) and a trial runs {epochs:g} epochs (median). Each "
              f"epoch's checkpoint (model, AdamW state, generators) is {asha.checkpoint_bytes / 2**20:.1f} MB, and "
              "Ray keeps the last 2 per trial."]
    return lines


def first_step_s(run: Run) -> float:
    """Seconds from the command's launch to the first training step of any trial."""
    return min(t.timing["first_step"] for t in run.trials if "first_step" in t.timing) - run.started


def exit_s(run: Run) -> float:
    """Seconds from the last trial's end (its last report) to the command's exit."""
    return run.started + run.wall_s - max(t.timing["end"] for t in run.trials)


def timeline(run: Run) -> str:
    """Where the seconds before the first step and after the last trial went (search_time.json)."""
    ph, end = run.phases, run.started + run.wall_s
    first = min(t.timing["assigned"] for t in run.trials)
    fresh = min((t for t in run.trials if "first_step" in t.timing), key=lambda t: t.timing["first_step"])
    last = max(t.timing["end"] for t in run.trials)
    return (f"before the first step: the script's start (Python, imports, the space checked) "
            f"{ph['started'] - run.started:.1f} s, Ray's start (with its dashboard; the search code's imports "
            f"run meanwhile) {ph['ray_ready'] - ph['started']:.1f} s, {first - ph['ray_ready']:.1f} s until a "
            f"worker takes the first trial, then its start-up {startup_s(fresh):.1f} s; after the last trial: "
            f"{ph['trials_done'] - last:.1f} s until Tune returns, {ph['ray_stopped'] - ph['trials_done']:.1f} s "
            f"Ray's stop (the export and report, {ph['reported'] - ph['trials_done']:.1f} s, run meanwhile), "
            f"{end - ph['ended']:.1f} s the process's exit" if "reported" in ph else
            f"the search's record has no `reported` phase (written before {run.name} overlapped the report with Ray's stop)")


def goals_section(asha: Run, no_es: Run, peer: Run) -> list[str]:
    """The search-efficiency goals (issues 13 and 35), each from this run's figures."""
    startup = statistics.median(startup_s(t) for t in asha.trials if "first_step" in t.timing)
    parts = shares(asha)
    rate = {r.name: trial_epochs(r) / r.wall_s for r in (asha, peer)}
    target = best_final(no_es)
    reach = {r.name: time_to_reach(r, target) for r in (asha, peer)}
    overhead = epoch_overhead(asha)
    if reach[asha.name] is not None and reach[peer.name] is not None:
        ratio = reach[asha.name] / reach[peer.name]
        reach_text, reach_met = (f"{fmt_s(reach[asha.name])} against {fmt_s(reach[peer.name])}: {ratio:.2f}x",
                                 ratio <= 0.6)
    elif reach[asha.name] is not None:
        reach_text, reach_met = f"{fmt_s(reach[asha.name])}; plain Optuna did not reach it", True
    else:
        reach_text, reach_met = "not reached by `asha`", False
    others = ", ".join(f"{k} {v:.0%}" for k, v in parts.items() if k != "training steps")
    per_epoch = {r.name: r.wall_s * r.cpus / trial_epochs(r) for r in (asha, peer)}
    train_per_epoch = {r.name: core_seconds(r, "time/train_s") / trial_epochs(r) for r in (asha, peer)}
    rate_limit = (f"core-seconds per trial-epoch: {per_epoch[asha.name]:.2f} s against {per_epoch[peer.name]:.2f} s, "
                  f"of which training steps {train_per_epoch[asha.name]:.2f} s against {train_per_epoch[peer.name]:.2f} s; "
                  f"{others}")
    fresh = [startup_s(t) for t in asha.trials if t.worker_trials == 1 and "first_step" in t.timing]
    ratio = rate[asha.name] / rate[peer.name]
    goals = [
        ("trial-epochs per minute against plain Optuna", f"{ratio:.2f}x", ">= 1.2x", ratio >= 1.2, rate_limit),
        ("training steps, share of the whole command's core-seconds (Ray's start and the report included)",
         f"{parts['training steps']:.0%}", ">= 75%", parts["training steps"] >= 0.75, others),
        ("from the command to the first trial's first step", f"{first_step_s(asha):.1f} s", "<= 4 s",
         first_step_s(asha) <= 4, timeline(asha)),
        ("from the last trial's end to the command's exit", f"{exit_s(asha):.1f} s", "<= 2 s", exit_s(asha) <= 2,
         timeline(asha)),
        ("trial start-up, median (worker takes the trial -> first step)", f"{startup:.2f} s", "<= 0.5 s",
         startup <= 0.5, f"{len(fresh)} trials in fresh workers, median {statistics.median(fresh):.2f} s"
         if fresh else ""),
        (f"wall time until a trial ends at >= the no-ES best ({target:.4f}), against plain Optuna", reach_text,
         "<= 0.6x", reach_met, ""),
        ("per-epoch overhead outside training and evaluation, median share of an epoch", f"{overhead:.1%}", "<= 5%",
         overhead <= 0.05, ""),
    ]
    return ["## Search efficiency goals", "",
            f"Each from the figures above (`{asha.name}`, the no-early-stopping search and plain Optuna).", "",
            "| goal | measured | target | met | what limits it (where not met) |", "|---|---|---|---|---|",
            *[f"| {name} | {value} | {bar} | {'yes' if met else 'no'} | {'' if met else why} |"
              for name, value, bar, met, why in goals]]


def scaling_section(rows: list[tuple[int, Run, Run]], space: str) -> list[str]:
    """`asha` against plain Optuna as the search grows: (num_samples, asha, optuna) per size."""
    lines = ["## Fixed costs as the search grows", "",
             f"`{space}` with more trials (the same maximum epochs, ASHA and pruner settings): `asha` (scripts/search.py) "
             "against plain Optuna. Fixed: the seconds before the first trial's first step plus those after the last "
             "trial's end, which do not grow with the search.", "",
             "| trials | asha wall | optuna wall | asha trial-epochs per minute | optuna | ratio | asha training share "
             "| optuna training share | asha fixed seconds | fixed share of asha's wall |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for samples, asha, peer in rows:
        rate = {r.name: 60 * trial_epochs(r) / r.wall_s for r in (asha, peer)}
        fixed = first_step_s(asha) + exit_s(asha)
        lines.append(f"| {samples} | {fmt_s(asha.wall_s)} | {fmt_s(peer.wall_s)} | {rate[asha.name]:.1f} | "
                     f"{rate[peer.name]:.1f} | {rate[asha.name] / rate[peer.name]:.2f}x | "
                     f"{shares(asha)['training steps']:.0%} | {shares(peer)['training steps']:.0%} | {fixed:.1f} s | "
                     f"{fixed / asha.wall_s:.0%} |")
    return lines


def asha_section(asha: Run, no_es: Run, budget, sampler: str, tolerance: float = 0.01) -> list[str]:
    target = best_final(no_es)
    near = target - tolerance * abs(target)
    reach = {run.name: (epochs_to_reach(run, target), epochs_to_reach(run, near)) for run in (no_es, asha)}
    lines = ["## ASHA against no early stopping", "",
             f"The same {budget.num_samples} trials' sampler ({sampler}), up to {budget.max_epochs} epochs; ASHA "
             f"with grace {budget.grace_period} and reduction factor {budget.reduction_factor}. A trial's "
             "objective is its score at its last epoch. Trial-epochs are counted in report order over all "
             "trials until one trial ends at the given score.", "",
             f"| search | trial-epochs | wall | best final score | trial-epochs until a trial ends at >= the "
             f"no-ES best ({target:.4f}) | ... within {tolerance:.0%} of it (>= {near:.4f}) |",
             "|---|---|---|---|---|---|"]
    for run in (no_es, asha):
        exact, close = reach[run.name]
        lines.append(f"| {run.name} | {trial_epochs(run)} | {fmt_s(run.wall_s)} | {best_final(run):.4f} | "
                     f"{exact if exact is not None else 'not reached'} | "
                     f"{close if close is not None else 'not reached'} |")
    lines += ["", f"ASHA spent {trial_epochs(asha) / trial_epochs(no_es):.0%} of the no-early-stopping trial-epochs "
              f"({trial_epochs(asha)} of {trial_epochs(no_es)}) and {asha.wall_s / no_es.wall_s:.0%} of its wall time."]
    for label, i in (("the no-ES best", 0), (f"within {tolerance:.0%} of it", 1)):
        if reach[asha.name][i] is not None and reach[no_es.name][i]:
            lines[-1] += (f" To reach {label} it needed {reach[asha.name][i] / reach[no_es.name][i]:.2f}x the "
                          "trial-epochs no-ES needed.")
        else:
            lines[-1] += f" It did not reach {label}."
    lines[-1] += (f" With {budget.num_samples} trials the sampler's later proposals differ between the runs (it "
                  "learns from different results), so one seed decides much of the comparison.")
    return lines


def peer_section(asha: Run, peer: Run) -> list[str]:
    lines = ["## Ray Tune against plain Optuna", "",
             "The peer a user would write instead: `study.optimize` in one process with TPESampler(seed) and "
             "HyperbandPruner over the same space, trainer and budget, using both cores as 2 torch threads. "
             "`asha` is our search (2 one-thread trials at a time).", "",
             "| search | wall | trial-epochs | trial-epochs per minute | best final score | time to the first "
             "trial that meets the seed's checklist | most checklist items one trial met |",
             "|---|---|---|---|---|---|---|"]
    for run in (asha, peer):
        lines.append(f"| {run.name} | {fmt_s(run.wall_s)} | {trial_epochs(run)} | "
                     f"{60 * trial_epochs(run) / run.wall_s:.1f} | {best_final(run):.4f} | "
                     f"{fmt_s(first_checklist_pass_s(run))} | {most_checklist_items(run)} |")
    return lines


def concurrency_section(asha: Run, serial: Run) -> list[str]:
    rate = {r.name: trial_epochs(r) / r.wall_s for r in (asha, serial)}
    return ["## Concurrency", "",
            "The same search with 2 concurrent one-thread trials (`asha`) and 1 trial at a time with 2 threads "
            f"(`serial`), on the machine's {asha.cpus} cores.", "",
            "| search | wall | trial-epochs | trial-epochs per minute |", "|---|---|---|---|",
            *[f"| {r.name} | {fmt_s(r.wall_s)} | {trial_epochs(r)} | {60 * rate[r.name]:.1f} |" for r in (serial, asha)],
            "", f"Speed-up of 2 concurrent trials: {serial.wall_s / asha.wall_s:.2f}x in wall time and "
            f"{rate['asha'] / rate['serial']:.2f}x in trial-epochs per minute (ASHA's decisions depend on the "
            "order results arrive, so the trial-epochs differ a little between the runs)."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="spaces/bench.yaml")
    parser.add_argument("--num-samples", type=int, help="override the space's budget.num_samples")
    parser.add_argument("--max-epochs", type=int, help="override the space's budget.max_epochs")
    parser.add_argument("--out", help="write the Markdown sections to this file")
    parser.add_argument("--sizes", default="2,4",
                        help="also run asha and plain Optuna with this many times the trials (comma-separated; "
                        "'' for none): how the fixed costs shrink as the search grows")
    args = parser.parse_args(argv)

    from search.space import load_space

    loaded = load_space(args.space)
    budget = loaded.space.budget.model_copy(update={
        k: v for k, v in (("num_samples", args.num_samples), ("max_epochs", args.max_epochs)) if v is not None})
    budget = budget.model_copy(update={"grace_period": min(budget.grace_period, budget.max_epochs)})
    tasks = loaded.space.set.get("data.max_tasks", loaded.base.get("data", {}).get("max_tasks"))
    cpus = os.cpu_count() or 1
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RAY_RUNS.items():
            wall, started = run_ray_search(name, args.space, budget, extra, Path(tmp))
            runs[name] = read_ray_run(name, Path(tmp) / name, wall, started, cpus, budget.max_epochs)
            print(f"{name}: {wall:.0f} s, {trial_epochs(runs[name])} trial-epochs", file=sys.stderr)
        runs["optuna"] = run_optuna_peer(args.space, budget, Path(tmp) / "optuna", threads=min(2, cpus))
        print(f"optuna: {runs['optuna'].wall_s:.0f} s", file=sys.stderr)
        scaling = [(budget.num_samples, runs["asha"], runs["optuna"])]
        for factor in [int(x) for x in args.sizes.split(",") if x.strip()]:
            bigger = budget.model_copy(update={"num_samples": factor * budget.num_samples})
            name = f"asha-x{factor}"
            wall, started = run_ray_search(name, args.space, bigger, RAY_RUNS["asha"], Path(tmp))
            asha = read_ray_run(name, Path(tmp) / name, wall, started, cpus, bigger.max_epochs)
            peer = run_optuna_peer(args.space, bigger, Path(tmp) / f"optuna-x{factor}", threads=min(2, cpus))
            print(f"x{factor}: asha {wall:.0f} s, optuna {peer.wall_s:.0f} s", file=sys.stderr)
            scaling.append((bigger.num_samples, asha, peer))

    command = shown_command("search_efficiency.py", argv)
    lines = [f"The next {6 if len(scaling) > 1 else 5} sections come from one run of `{command}` at commit {commit()} on {platform.node()} ({cpus} CPUs): "
             f"four searches of `{args.space}` ({budget.num_samples} trials, up to {budget.max_epochs} epochs, "
             f"{'all' if tasks is None else f'the first {tasks}'} tasks of its data).", ""]
    lines += overhead_section([runs["asha"], runs["no-es"], runs["serial"], runs["optuna"]]) + [""]
    lines += asha_section(runs["asha"], runs["no-es"], budget, f"{loaded.space.sampler.upper()}, seed {loaded.space.seed}") + [""]
    lines += peer_section(runs["asha"], runs["optuna"]) + [""]
    lines += concurrency_section(runs["asha"], runs["serial"]) + [""]
    lines += goals_section(runs["asha"], runs["no-es"], runs["optuna"]) + [""]
    if len(scaling) > 1:
        lines += scaling_section(scaling, args.space) + [""]
    ranked = sorted(shares(runs["asha"]).items(), key=lambda kv: -kv[1])
    lines += [f"Limited by (`asha`): {ranked[0][0]} ({ranked[0][1]:.0%} of the core-seconds), then "
              + ", ".join(f"{name} ({share:.0%})" for name, share in ranked[1:]) + ".", ""]
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
