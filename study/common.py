"""What the study's stages share: running many training runs, summarising a run, plotting runs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path


from search.export import read_jsonl
from search.runs import TrainRun
from search.targets import Targets, calibrated
from study.signature import SIGNATURE_CONTEXT_RANK, SIGNATURE_USAGE, seed_signature
from concurrent.futures import ThreadPoolExecutor

from search.runs import train_subprocess
from study.protocol import ROOT, TRAIN_SCRIPT


def run_many(jobs: list[tuple[Path, str, Path, list[str]]], workers: int) -> list[TrainRun]:
    """scripts/train.py for each (config, name, results, overrides), `workers` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(lambda j: train_subprocess(TRAIN_SCRIPT, *j, cwd=ROOT), jobs))
    for run in runs:
        if run.error:
            print(f"{run.name} failed:\n{run.error}", file=sys.stderr)
    return runs


def final_value(rows: list[dict], key: str) -> float:
    return rows[-1][key] if rows and isinstance(rows[-1].get(key), (int, float)) else math.nan



def trials_with_rows(exp_dir: Path) -> list:
    """(TrialRecord, its trainer rows) for each trial of the experiment that ran an epoch, best
    first under the experiment's goal (search/judge.py: ranked; unranked trials last)."""
    from search.export import read_trials
    from search.judge import ranked
    from search.targets import read_judging

    pairs = [(t, read_jsonl(t.path / "run" / "metrics.jsonl")) for t in read_trials(exp_dir)]
    order = {t.trial_id: i for i, t in enumerate(ranked([t for t, _ in pairs], read_judging(exp_dir).mode))}
    return sorted([(t, rows) for t, rows in pairs if rows], key=lambda pair: order.get(pair[0].trial_id, len(order)))


def trial_base(t, rows: list[dict]) -> dict:
    return {"trial_id": t.trial_id, "status": t.status, "epochs": rows[-1]["epoch"], "score": t.final("score"),
            "params": t.params, "first_refresh_epoch": first_refresh(rows)}


def first_refresh(rows: list[dict]) -> int | None:
    """The first epoch in which the dead-code refresh revived any code (None: never)."""
    return next((r["epoch"] for r in rows if r.get("codebook/refreshed", 0) > 0), None)


def finite_mean(xs: list[float]) -> float:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def run_summary(config: str, name: str, run: TrainRun, planned: int, targets: Targets | None = None) -> dict:
    from search.judge import judge

    rows = run.rows
    targets = targets or calibrated()
    return {"config": config, "name": name, "status": run.status, "epochs": rows[-1]["epoch"] if rows else 0,
            "first_refresh_epoch": first_refresh(rows),
            "signature": seed_signature(rows) if rows else {"reproduced": False},
            "final": {k: final_value(rows, k) for k in ("codebook/usage", "rank/context", "rank/target", "val/loss",
                                                     "val/loss_reference",
                                                     "grad/norm_mean", "grad/norm_max", "loss/relational",
                                                     "loss/infonce", "codes/nmi_colour", "codes/nmi_shape",
                                                     "codes/nmi_chance")},
            "min": {k: min((r[k] for r in rows if math.isfinite(r[k])), default=math.nan)
                    for k in ("codebook/usage", "rank/context", "rank/target")},
            **_verdicts(judge(rows, planned, targets)),
            "history": [{k: r[k] for k in ("epoch", "codebook/usage", "rank/context", "rank/target", "val/loss")}
                        for r in rows]}


def plot_runs(runs: list[dict], path: Path, title: str, seed_points: bool = False) -> None:
    """Per-epoch usage, context and target rank and val loss of `runs`, one colour per config;
    seed_points: the seed's sixth run beside them (study/signature.py SEED_SIXTH_RUN: usage and
    context rank at its first epoch and at its last, epoch 22)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("codebook/usage", "codebook usage"), ("rank/context", "context rank"),
            ("rank/target", "target rank"), ("val/loss", "val loss")]
    configs = sorted({r["config"] for r in runs})
    colours = dict(zip(configs, ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.5), constrained_layout=True)
    for ax, (key, label) in zip(axes, keys):
        for r in runs:
            xs = [h["epoch"] for h in r["history"] if math.isfinite(h[key])]
            ys = [h[key] for h in r["history"] if math.isfinite(h[key])]
            ax.plot(xs, ys, color=colours[r["config"]], lw=1.2, alpha=0.8)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for c in configs:
        axes[0].plot([], [], color=colours[c], label=c)
    axes[0].axhline(SIGNATURE_USAGE, color="k", ls=":", lw=1, label=f"signature: usage < {SIGNATURE_USAGE:.0%}")
    axes[1].axhline(SIGNATURE_CONTEXT_RANK, color="k", ls=":", lw=1, label=f"signature: rank < {SIGNATURE_CONTEXT_RANK:g}")
    if seed_points:
        from study.signature import SEED_SIXTH_RUN as seed

        last = seed["stopped_at"]
        axes[0].plot([1, last], list(seed["usage"]), "k*", ms=9, label="the seed's sixth run")
        axes[1].plot([1, last, last], [seed["context_rank_start"], *seed["context_rank"]], "k*", ms=9,
                     label="the seed's sixth run")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)




def checklist_items(rows: list[dict], planned: int, targets: Targets) -> dict:
    from search.judge import checklist, format_item

    return {k: {"pass": v["pass"], "label": v["label"], "shown": format_item(k, v)}
            for k, v in checklist(rows, planned, targets).items()}


def applicable(items: dict) -> dict:
    """The items that apply to a run (an n/a item, such as usage without a codebook, left out)."""
    return {k: v for k, v in items.items() if v["pass"] is not None}


def _verdicts(judgement) -> dict:
    """A judgement's two verdicts as the summaries have always stored them."""
    return {"verdict": judgement.verdict, "verdict_seed_targets": judgement.seed_verdict}




def pass_counts(runs: list[dict]) -> dict[str, int]:
    """Per item id, in how many of the runs (each an items dict of checklist_items) it passed; items that
    apply to none of the runs are left out (search/judge.py: across_seeds)."""
    from search.judge import across_seeds

    return {k: c["passed"] for k, c in across_seeds(runs).items() if c["applicable"]}


def without_root(value):
    """`value` (a summary's JSON: dicts, lists, strings) with this checkout's path made relative:
    "/path/to/repo/results/x" -> "results/x", so no machine's paths land in docs/."""
    if isinstance(value, dict):
        return {k: without_root(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_root(v) for v in value]
    return value.replace(f"{ROOT}/", "") if isinstance(value, str) else value


def search_once(space: str, exp_dir: Path, workers: int) -> None:
    """`scripts/search.py space` as exp_dir, `workers` trials at a time: resumed if it was cut
    short, not run again if it finished (its best_trial.json is there)."""
    if (exp_dir / "best_trial.json").is_file():
        return
    cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), space, "--name", exp_dir.name,
           "--storage", str(exp_dir.parent), "--max-concurrent", str(workers)]
    subprocess.run(cmd + (["--resume"] if exp_dir.is_dir() else []), cwd=ROOT, check=True)
