"""An experiment's report: results/<experiment>/report.md with PNG plots beside it.

    curves.png        score, codebook usage, context and target rank, val loss per epoch for
                      every trial; the best trial highlighted; x where a trial was stopped early
    params.png        each searched parameter against the trial's final score (log axes for log
                      distributions)
    importance.png    Optuna's parameter importances (PED-ANOVA, Watanabe et al. 2023) from the
                      stored study
    pareto.png        multi-objective searches: the Pareto front of usage, context rank, val loss
    report.md         the plots, a table of the top trials with their parameters and the seed's
                      checklist (pass/fail per item), the verification (scripts/verify.py) when it
                      exists, the reproduce command and the versions it ran with (versions.json)

Everything is read from the experiment folder (search/export.py), so the report can be made
for a running, finished or interrupted search.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import yaml  # noqa: E402

from model.io import atomic_write_text  # noqa: E402
from search.export import RACE_OUTCOME_FILE, TrialRecord, planned_epochs, read_json, read_jsonl, read_trials  # noqa: E402
from search import metrics  # noqa: E402
from search.judge import format_item, judge, ranked  # noqa: E402
from search.score import items_passed  # noqa: E402
from search.targets import SEED, Targets, read_judging  # noqa: E402
from search.versions import drift, recorded  # noqa: E402



def format_score(score: float, with_items: bool = False) -> str:
    """Five decimals, and optionally the checklist pass count the score carries (search/score.py):
    '7.41234 (7 checklist items passed)'."""
    if not _finite(score):
        return str(score)
    text = f"{score:.5f}"
    if not with_items:
        return text
    n = items_passed(score)
    return text + (" (diverged)" if n is None else f" ({n} checklist item{'s' if n != 1 else ''} passed)")


def _best_score(t: TrialRecord) -> float:
    """The search's objective: the trial's score at its last epoch."""
    return t.final("score")


def plot_curves(trials: list[TrialRecord], best: TrialRecord | None, path: Path, targets: Targets = SEED) -> None:
    bars, curves = metrics.target_lines(targets), metrics.curves()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), constrained_layout=True)
    for ax, (key, label) in zip(axes, curves):
        for t in trials:
            xs = [r["epoch"] for r in t.results if key in r and _finite(r[key])]
            ys = [r[key] for r in t.results if key in r and _finite(r[key])]
            if not xs or t is best:
                continue
            ax.plot(xs, ys, color="0.6", lw=0.8, alpha=0.7)
            if t.status in STOPPED:
                ax.plot(xs[-1], ys[-1], "x", color="tab:red", ms=4, alpha=0.8)
        if best is not None:
            xs = [r["epoch"] for r in best.results if _finite(r.get(key, math.nan))]
            ys = [r[key] for r in best.results if _finite(r.get(key, math.nan))]
            ax.plot(xs, ys, color="tab:blue", lw=2.2, label=f"best ({best.trial_id})")
        if key in bars:
            ax.axhline(bars[key], color="tab:green", ls="--", lw=1, label="target in force")
            seed_bar = metrics.target_lines(SEED)[key]
            if seed_bar != bars[key]:
                ax.axhline(seed_bar, color="tab:orange", ls=":", lw=1, label="seed's literal target")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "x", color="tab:red", label="stopped early")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{len(trials)} trials per epoch")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_params(trials: list[TrialRecord], space: dict, path: Path) -> list[str]:
    params = [k for k, p in space.get("params", {}).items() if p.get("dist") != "fixed"]
    if not params:
        return []
    cols = min(4, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes.flat, params):
        dist = space["params"][key]["dist"]
        pts = [(t.params[key], _best_score(t), t.status in STOPPED) for t in trials
               if key in t.params and _finite(_best_score(t))]
        if dist == "categorical":
            labels = [json.dumps(c) if isinstance(c, list) else str(c) for c in space["params"][key]["choices"]]
            index = {lab: i for i, lab in enumerate(labels)}
            xs = [index.get(json.dumps(v) if isinstance(v, list) else str(v), -1) for v, _, _ in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        else:
            xs = [v for v, _, _ in pts]
            if dist in ("loguniform", "logint"):
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())  # default minor labels collide
        full = [i for i, (_, _, stopped) in enumerate(pts) if not stopped]
        cut = [i for i, (_, _, stopped) in enumerate(pts) if stopped]
        ax.scatter([xs[i] for i in full], [pts[i][1] for i in full], s=18, alpha=0.75, label="ran its full budget")
        ax.scatter([xs[i] for i in cut], [pts[i][1] for i in cut], s=22, marker="x", color="tab:red", alpha=0.75,
                   label="stopped early (score at its last epoch)")
        ax.set_xlabel(key, fontsize=9)
        ax.set_ylabel("final score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    n_cut = sum(t.status in STOPPED for t in trials)
    fig.suptitle(f"final score of every trial ({len(trials) - n_cut} ran the full budget, {n_cut} were stopped "
                 "early and are scored at an earlier epoch); importance.png uses the completed trials only")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return params


def load_study(exp_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=exp_dir.name, storage=f"sqlite:///{exp_dir / 'study.db'}")
    except Exception:  # no study (yet): the report says so
        return None


def plot_pareto(study, path: Path, targets: Targets = SEED) -> list:
    """Multi-objective studies: usage against context rank, coloured by val loss; the Pareto
    front (study.best_trials) ringed and numbered."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = study.best_trials
    fig, ax = plt.subplots(figsize=(6.5, 4.8), constrained_layout=True)
    points = ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], c=[t.values[2] for t in done],
                        cmap="viridis_r", s=30)
    fig.colorbar(points, ax=ax, label="val loss (lower is better)")
    for t in front:
        ax.scatter(t.values[0], t.values[1], s=120, facecolors="none", edgecolors="black", lw=1.4)
        ax.annotate(str(t.number), (t.values[0], t.values[1]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.axvline(targets.usage, color="tab:green", ls="--", lw=1)
    ax.axhline(targets.context_rank, color="tab:green", ls="--", lw=1)
    ax.set_xlabel("codebook usage (last epoch)")
    ax.set_ylabel("context rank (last epoch)")
    ax.set_title(f"Pareto front: {len(front)} of {len(done)} completed trials (ringed)")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return front


def param_importances(study) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances over the completed trials, or ({}, why they cannot be computed)."""
    import optuna

    if study is None:
        return {}, "no Optuna study in the experiment folder"
    if len(study.directions) > 1:
        return {}, "a multi-objective study (see the Pareto front)"
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        return {}, f"{len(done)} completed trial(s); at least two are needed"
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # no scikit-learn needed
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (ValueError, RuntimeError) as err:  # e.g. parameters that never varied
        return {}, str(err)


def plot_importances(importances: dict[str, float], path: Path, completed: int | None = None) -> None:
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.2), constrained_layout=True)
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.set_title("parameter importance" + (f" over the {completed} completed trials (stopped ones excluded)"
                                           if completed is not None else ""), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


STOPPED = ("stopped", "collapsed")  # ended by ASHA or the collapse stopper, before the budget


def _completed(study) -> int:
    import optuna

    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, list) else str(v)


def write_report(exp_dir: str | Path, top: int = 10) -> Path:
    """report.md and its plots: the summary, the curves, parameters against score, the Pareto front
    of a multi-objective search, parameter importance, the top trials' checklists, the final race,
    the verification and how to reproduce the search, in that order."""
    exp_dir = Path(exp_dir)
    trials = read_trials(exp_dir)
    judging = read_judging(exp_dir)
    scored = ranked(trials, judging.mode)  # the order export's best_trial.json is picked by
    race = read_json(exp_dir / RACE_OUTCOME_FILE)
    best = next((t for t in scored if t.trial_id == race.get("winner")), scored[0] if scored else None)
    space = yaml.safe_load((exp_dir / "space.yaml").read_text()) if (exp_dir / "space.yaml").is_file() else {}
    plot_curves(trials, best, exp_dir / "curves.png", judging.targets)
    params = plot_params(trials, space, exp_dir / "params.png")
    study = load_study(exp_dir)

    lines = _summary_lines(exp_dir, trials, best, race, judging)
    lines += ["## Per epoch", "", "![curves](curves.png)", ""]
    if params:
        lines += ["## Parameters against score", "", "![params](params.png)", ""]
    if study is not None and len(study.directions) > 1:
        lines += _pareto_lines(study, exp_dir / "pareto.png", judging.targets)
    lines += _importance_lines(study, exp_dir / "importance.png")
    lines += _top_lines(scored[:top], params, judging)
    if race:
        lines += ["", "## Final race (fresh seeds, production budget)", "", *_race_lines(race)]
    verify = exp_dir / "verify.json"
    if verify.is_file():
        lines += ["", "## Verification (fresh seeds, full epochs)", "", *_verify_lines(json.loads(verify.read_text()))]
    lines += _reproduce_lines(exp_dir)
    path = exp_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _summary_lines(exp_dir: Path, trials: list[TrialRecord], best: TrialRecord | None, race: dict, judging) -> list[str]:
    """The trials by status, the goal and targets, the best trial and its checklist verdict."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    lines = [f"# Search report: {exp_dir.name}", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    t_ = judging.targets
    lines += [f"Goal: **{judging.goal}** (trials ranked by their final score, {'highest' if judging.mode == 'max' else 'lowest'} first). "
              f"Targets in force: usage {t_.usage:.0%}, context rank {t_.context_rank:g}, target rank "
              f"{t_.target_rank:g}, final val loss {t_.final_val_loss:g} ({t_.source}); the seed's literal ones: "
              f"usage {SEED.usage:.0%}, context rank {SEED.context_rank:g}, target rank {SEED.target_rank:g}, final "
              f"val loss {SEED.final_val_loss:g}. The score is the checklist's pass count on the whole run plus a "
              "health margin in [0, 1) (search/score.py).", ""]
    if best is not None:
        judgement = judge(read_jsonl(best.path / "run" / "metrics.jsonl"), planned_epochs(best), judging.targets)
        v, v_seed = judgement.verdict, judgement.seed_verdict
        failed = "; failed: " + ", ".join(v["failed"]) if v["failed"] else ""
        failed += "; n/a (never reported): " + ", ".join(v["n/a"]) if v["n/a"] else ""
        raced = f" (the final race's winner: {race['summary']})" if race.get("winner") else ""
        lines += [f"Best trial: `{best.trial_id}`{raced}, final score {format_score(_best_score(best), True)} "
                  f"({best.status}); config: `{exp_dir / 'best_config.yaml'}`.", "",
                  f"Checklist{' in its exploration trial' if raced else ''}: {v['passed']}/{v['total']} items pass "
                  f"with the targets in force{failed}; "
                  f"{v_seed['passed']}/{v_seed['total']} with the seed's literal targets.", ""]
    return lines


def _pareto_lines(study, path: Path, targets: Targets) -> list[str]:
    front = plot_pareto(study, path, targets)
    lines = ["## Pareto front (multi-objective: usage max, context rank max, val loss min)", "",
             f"![pareto]({path.name})", "", "| study trial | Ray trial | usage | context rank | val loss |",
             "|---|---|---|---|---|"]
    lines += [f"| {t.number} | `{t.user_attrs.get('ray_trial_id', '')}` | {t.values[0]:.3f} | {t.values[1]:.2f} "
              f"| {t.values[2]:.4f} |" for t in front]
    return lines + [""]


def _importance_lines(study, path: Path) -> list[str]:
    importances, why_not = param_importances(study)
    lines = ["## Parameter importance", ""]
    if not importances:
        return lines + [f"Not computable: {why_not}."]
    plot_importances(importances, path, completed=_completed(study))
    lines += ["Over the study's completed trials only (pruned ones are not in Optuna's importance).", "",
              f"![importance]({path.name})", "", "| parameter | importance |", "|---|---|"]
    return lines + [f"| `{k}` | {v:.3f} |" for k, v in importances.items()]


def _top_lines(top: list[TrialRecord], params: list[str], judging) -> list[str]:
    """The best trials, each with its parameters and its checklist, item by item."""
    lines = ["", f"## Top {len(top)} trials", ""]
    rows = [(t, judge(read_jsonl(t.path / "run" / "metrics.jsonl"), planned_epochs(t), judging.targets)) for t in top]
    label_of = {k: v["label"] for _, j in rows for k, v in j.items.items()}
    labels = [k for k in metrics.item_ids() if k in label_of]
    header = ["trial", "status", "epochs", "final score", "best score", *[f"`{p}`" for p in params],
              *[label_of[k] for k in labels], "items passed (seed's literal targets)"]
    lines += ["Each checklist column shows the verdict with the targets in force and the value that decided "
              "it (@ the epoch; n/a: the trainer never reported its metric); the last column counts the items "
              "passed with the seed's literal targets.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t, j in rows:
        marks = [format_item(k, j.items[k]) if k in j.items else "FAIL: no epochs" for k in labels]
        lines.append("| " + " | ".join([f"`{t.trial_id}`", t.status, str(t.last.get("epoch", 0)),
                                         format_score(_best_score(t)), format_score(t.best('score', judging.mode)),
                                         *[_fmt(t.params.get(p, "")) for p in params],
                                         *marks, f"{j.seed_verdict['passed']}/{j.seed_verdict['total']}"]) + " |")
    return lines


def _reproduce_lines(exp_dir: Path) -> list[str]:
    """The search's command and the versions it ran with (and any installed now that differ)."""
    command = (exp_dir / "command.txt").read_text().strip() if (exp_dir / "command.txt").is_file() else "(unknown)"
    ran_with = recorded(exp_dir)
    lines = ["", "## Reproduce", "", "```", command, "```", "",
             ("Ran with " + ", ".join(f"{name} {v}" for name, v in ran_with.items()) + " (versions.json)."
              if ran_with else "The versions it ran with were not recorded (an experiment from before versions.json).")]
    return lines + [f"Installed now: {line}." for line in drift(exp_dir)] + [""]


def _race_lines(race: dict) -> list[str]:
    """The race (race.json, search/race.py): each finalist's verdict in each seed, best first."""
    seeds = race["seeds"]
    if race.get("winner"):
        head = [f"Winner: `{race['winner']}`, {race['summary']}; {race['trial_epochs']} trial-epochs run of the "
                f"{race['trial_epochs_without_stopping']} a race without stopping runs. Finalists are ranked by the items "
                "passed in their worst seed, then by their mean health margin; a finalist that could no longer beat "
                "the best was dropped."]
        head += ["", *[f"- The winner failed in {line}." for line in race["winner_failures"]]] if race["winner_failures"] else []
    else:
        head = ["The race has not finished (resume the search with `--resume`)."]
    lines = [*head, "", "| finalist | exploration score | " + " | ".join(f"seed {s}" for s in seeds)
             + " | worst seed | mean margin |", "|---|---|" + "---|" * len(seeds) + "---|---|"]
    for trial_id in race["ranking"]:
        f = race["finalists"][trial_id]
        cells = []
        for s in seeds:
            v = f["seeds"][str(s)]
            shown = f"{v['verdict']['passed']}/{v['verdict']['total']}" if v["verdict"] else "-"
            cells.append(f"{shown} ({v['status']}, {v['epochs']} epochs)")
        lines.append(f"| `{trial_id}`{' (dropped)' if f['dropped'] else ''} | {format_score(f['exploration_score'])} | "
                     + " | ".join(cells) + f" | {f['worst_passed']}/{f['total']} | {f['mean_margin']:.3f} |")
    return lines


def _verify_lines(v: dict) -> list[str]:
    lines = [f"Command: `{v.get('command', '')}`; seeds {v.get('seeds')}.", ""]
    if v.get("versions_differ"):
        lines += ["Verified with other versions than the search ran with: " + "; ".join(v["versions_differ"]) + ".", ""]
    lines += ["| trial | item | pass rate | mean | std |", "|---|---|---|---|---|"]
    for trial_id, items in v.get("trials", {}).items():
        for item, s in items.items():
            rate = "n/a" if s["pass_rate"] is None else f"{s['pass_rate']:.0%}"
            lines.append(f"| `{trial_id}` | {item} | {rate} | {s['mean']:.4g} | {s['std']:.3g} |")
    return lines
