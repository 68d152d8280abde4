"""The VQ-VAE on ARC grids (model/vqvae.py), a second model through the trainer contract: its
default config (configs/vqvae.yaml: a large random codebook, no refresh) over fresh seeds, against
the winner of its search (spaces/vqvae.yaml) retrained with the same seeds by scripts/verify.py.
Does the textbook collapse happen, and does the search fix it?"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from model.io import atomic_write_json
from search.export import read_json, read_jsonl
from search.judge import across_seeds, checklist
from search.targets import read_judging
from study.common import run_many
from study.fix import search_and_verify
from study.protocol import DOCS, ROOT, RUNS, VQVAE_CONFIG, VQVAE_NAME, VQVAE_SEEDS, VQVAE_SPACE, command


def stage_vqvae(workers: int = 2, seeds: tuple[int, ...] = VQVAE_SEEDS, docs: Path = DOCS, runs: Path = RUNS,
                exp_dir: Path | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """Search spaces/vqvae.yaml (results/study-vqvae), verify its winner with `seeds`, train the
    default config with the same seeds, then summarise."""
    exp_dir = exp_dir or ROOT / "results" / VQVAE_NAME
    search_and_verify(VQVAE_SPACE, exp_dir, workers, len(seeds))
    jobs = [(ROOT / VQVAE_CONFIG, f"vqvae-default-seed{s}", runs / "vqvae", [f"--seed={s}", *overrides]) for s in seeds]
    run_many(jobs, workers)
    return summarise_vqvae(exp_dir, seeds, docs, runs)


def _judged(rows_by_seed: dict[int, list[dict]], epochs: int, targets) -> dict:
    items = {s: checklist(rows, epochs, targets) for s, rows in rows_by_seed.items() if rows}
    return {"seeds": {str(s): {"min_usage": min((r["codebook/usage"] for r in rows), default=math.nan),
                               "final": {k: rows[-1].get(k, math.nan) for k in
                                         ("codebook/usage", "codebook/perplexity", "rank/context", "val/loss", "val/accuracy")},
                               "usage": [r["codebook/usage"] for r in rows], "epochs": len(rows),
                               "failed": [v["label"] for v in items[s].values() if v["pass"] is False]}
                      for s, rows in rows_by_seed.items() if rows},
            "pass_rates": {k: c["pass_rate"] for k, c in across_seeds(items.values()).items()},
            "labels": {k: v["label"] for its in items.values() for k, v in its.items()}}


def summarise_vqvae(exp_dir: Path, seeds: tuple[int, ...] = VQVAE_SEEDS, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/vqvae.json and vqvae.png: per seed, the default's and the winner's usage per
    epoch, final metrics and checklist (the search's targets), and the winner's parameters."""
    judging = read_judging(exp_dir)
    best = read_json(exp_dir / "best_trial.json")
    shown = exp_dir.relative_to(ROOT) if exp_dir.is_relative_to(ROOT) else exp_dir
    if best.get("trial_dir"):  # where it is now, relative to the repository: no machine's paths in docs/
        best["trial_dir"] = str(shown / Path(best["trial_dir"]).name)
    epochs = yaml.safe_load((ROOT / VQVAE_CONFIG).read_text())["epochs"]
    winner_epochs = yaml.safe_load((exp_dir / "best_config.yaml").read_text())["epochs"]
    default = {s: read_jsonl(runs / "vqvae" / f"vqvae-default-seed{s}" / "metrics.jsonl") for s in seeds}
    winner = {s: read_jsonl(exp_dir / "verify" / f"{best.get('trial_id')}-seed{s}" / "metrics.jsonl") for s in seeds}
    summary = {"command": command("vqvae"), "search_command": f"python scripts/search.py {VQVAE_SPACE}",
               "config": VQVAE_CONFIG, "experiment": str(shown),
               "targets": judging.targets.as_dict(), "seeds": list(seeds), "best": best,
               "statuses": _statuses(exp_dir),
               "default": _judged(default, epochs, judging.targets), "winner": _judged(winner, winner_epochs, judging.targets)}
    atomic_write_json(docs / "vqvae.json", summary)
    _plot(summary, docs / "vqvae.png")
    return summary


def _statuses(exp_dir: Path) -> dict[str, int]:
    from search.export import read_trials

    counts: dict[str, int] = {}
    for t in read_trials(exp_dir):
        counts[t.status] = counts.get(t.status, 0) + 1
    return dict(sorted(counts.items()))


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, colour in (("default", "tab:red"), ("winner", "tab:blue")):
        for i, (seed, entry) in enumerate(summary[name]["seeds"].items()):
            ax.plot(range(1, len(entry["usage"]) + 1), entry["usage"], color=colour, lw=1.3, alpha=0.8,
                    label=f"{name} (seeds {', '.join(summary[name]['seeds'])})" if i == 0 else None)
    ax.axhline(summary["targets"]["usage"], color="tab:green", ls="--", lw=1, label="usage bar")
    ax.set_xlabel("epoch")
    ax.set_ylabel("codebook usage (val cells)")
    ax.set_title("VQ-VAE on ARC grids: the default config against the search's winner")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
