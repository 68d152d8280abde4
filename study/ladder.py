"""The seed's question at other scales (Part 3): does the collapse appear with a larger model and
more data, where our no-VQ run's ranks come near the seed's?

    ladder    the no-VQ diagnostic and the sixth run at each rung (model.dim x data, heads and
              predictor width scaled with the width), seed LADDER_SEEDS[0] everywhere; then every
              seed at the rung whose no-VQ ranks come closest to the seed's (the seed's diagnostic
              at that rung), its targets calibrated by the existing rule
    rung      the failure-seeking search (spaces/collapse.yaml) at that rung
    distance  the production config over its full epochs as it is and with more data per epoch
              or gentler steps, the same fresh seeds; the variant that passes every item there is
              run beside the production config on held-out seeds

A rung is (dim, data); the seed's figures it is compared with are search/targets.py's SEED_NO_VQ.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from model.io import atomic_write_json, atomic_write_text
from search.export import read_json, read_jsonl
from search.judge import across_seeds, checklist
from search.targets import SEED, SEED_NO_VQ, calibrate_from
from study.signature import seed_signature
from study.common import first_refresh, run_many, search_once
from study.collapse import summarise_collapse
from study.protocol import (COLLAPSE_SPACE, DISTANCE_HELD_OUT_SEEDS, DISTANCE_SEEDS, DISTANCE_VARIANTS, DOCS,
                            LADDER_CONFIGS, LADDER_DATA, LADDER_DIMS, LADDER_EPOCHS, LADDER_SEEDS, PRODUCTION_CONFIG, RUNG_BUDGET, RUNG_NAME, ROOT,
                            RUNS, command)


def rung_overrides(dim: int, data: str) -> list[str]:
    """A rung's --set overrides: the width with heads (width 16 each, as at dim 64) and predictor
    width (twice the width) scaled with it, and the data."""
    return [f"model.dim={dim}", f"model.heads={dim // 16}", f"model.predictor_hidden={2 * dim}", *LADDER_DATA[data]]


def run_name(config: str, dim: int, data: str, seed: int) -> str:
    return f"{config}-d{dim}-{data}-seed{seed}"


def _jobs(rungs: list[tuple[int, str]], seeds: tuple[int, ...], runs: Path, epochs: int,
          overrides: tuple[str, ...] = ()) -> list:
    return [(ROOT / "configs" / f"{c}.yaml", run_name(c, d, data, s), runs / "ladder",
             [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *rung_overrides(d, data), *overrides])
            for d, data in rungs for c in LADDER_CONFIGS for s in seeds
            if not (runs / "ladder" / run_name(c, d, data, s) / "status.json").is_file()]  # finished runs are kept


def closeness(no_vq: dict) -> float:
    """How far a no-VQ run's ranks are from the seed's no-VQ run's: the mean |log(ours / seed's)|
    over the context and target rank at the first and the last epoch (0: the same)."""
    ours = (no_vq["context_first"], no_vq["context_end"], no_vq["target_first"], no_vq["target_end"])
    seed = (*SEED_NO_VQ["context_rank"], *SEED_NO_VQ["target_rank"])
    return sum(abs(math.log(a / b)) for a, b in zip(ours, seed)) / len(ours)


def stage_ladder(workers: int = 2, epochs: int = LADDER_EPOCHS, dims: tuple[int, ...] = LADDER_DIMS,
                 data: tuple[str, ...] = tuple(LADDER_DATA), seeds: tuple[int, ...] = LADDER_SEEDS,
                 docs: Path = DOCS, runs: Path = RUNS, overrides: tuple[str, ...] = ()) -> dict:
    """Every rung with the first seed, then every seed at the closest rung; summarised."""
    rungs = [(d, x) for d in dims for x in data]
    run_many(_jobs(rungs, seeds[:1], runs, epochs, overrides), workers)
    first = summarise_ladder(epochs, rungs, seeds, docs, runs)
    chosen = (first["chosen"]["dim"], first["chosen"]["data"])
    run_many(_jobs([chosen], seeds, runs, epochs, overrides), workers)
    return summarise_ladder(epochs, rungs, seeds, docs, runs)


def _rows(config: str, dim: int, data: str, seed: int, runs: Path) -> list[dict]:
    return read_jsonl(runs / "ladder" / run_name(config, dim, data, seed) / "metrics.jsonl")


def _no_vq(rows: list[dict]) -> dict:
    return {"context_first": rows[0]["rank/context"], "context_end": rows[-1]["rank/context"],
            "target_first": rows[0]["rank/target"], "target_end": rows[-1]["rank/target"],
            "context_min": min(r["rank/context"] for r in rows), "target_min": min(r["rank/target"] for r in rows),
            "final_val_loss": rows[-1]["val/loss_reference"], "epochs": len(rows),
            "epoch_s": sum(r["time/epoch_s"] for r in rows) / len(rows)}


def _sixth(rows: list[dict]) -> dict:
    sig = seed_signature(rows)
    return {"min_usage": min(r["codebook/usage"] for r in rows), "min_context_rank": min(r["rank/context"] for r in rows),
            "signature": sig["reproduced"], "signature_epoch": sig["epoch"], "first_refresh_epoch": first_refresh(rows),
            "epochs": len(rows), "epoch_s": sum(r["time/epoch_s"] for r in rows) / len(rows)}


def summarise_ladder(epochs: int = LADDER_EPOCHS, rungs: list[tuple[int, str]] | None = None,
                     seeds: tuple[int, ...] = LADDER_SEEDS, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/ladder.json and ladder.png: per rung and seed, the no-VQ run's ranks against the
    seed's and the sixth run's lowest usage, lowest context rank and signature; the rung closest
    to the seed's no-VQ ranks, its targets calibrated from its no-VQ runs beside the seed's literal ones."""
    rungs = rungs or [(d, x) for d in LADDER_DIMS for x in LADDER_DATA]
    table = []
    for d, x in rungs:
        entry = {"dim": d, "data": x, "overrides": rung_overrides(d, x), "seeds": {}}
        for s in seeds:
            no_vq, sixth = _rows("diagnostic_no_vq", d, x, s, runs), _rows("sixth_run", d, x, s, runs)
            if no_vq or sixth:
                entry["seeds"][str(s)] = {"no_vq": _no_vq(no_vq) if no_vq else None, "sixth": _sixth(sixth) if sixth else None}
        first = entry["seeds"].get(str(seeds[0]), {}).get("no_vq")
        entry["closeness"] = closeness(first) if first else math.nan
        table.append(entry)
    ran = [e for e in table if math.isfinite(e["closeness"])]
    chosen = min(ran, key=lambda e: e["closeness"]) if ran else None
    summary = {"command": command("ladder"), "epochs": epochs, "seeds": list(seeds), "configs": list(LADDER_CONFIGS),
               "seed_no_vq": SEED_NO_VQ, "rungs": table,
               "chosen": {"dim": chosen["dim"], "data": chosen["data"], "closeness": chosen["closeness"]} if chosen else None}
    if chosen is not None:
        summary["at_chosen"] = _at_rung(chosen, seeds, runs, epochs)
    atomic_write_json(docs / "ladder.json", summary)
    if ran:
        _plot(summary, docs / "ladder.png")
    return summary


def _at_rung(entry: dict, seeds: tuple[int, ...], runs: Path, epochs: int) -> dict:
    """The rung's diagnostic over its seeds: the signature count, and its targets calibrated from
    its no-VQ runs (search/targets.py's rule) beside the seed's literal ones, with each set's
    verdict on the no-VQ and the sixth runs."""
    no_vq = {s: _rows("diagnostic_no_vq", entry["dim"], entry["data"], s, runs) for s in seeds}
    sixth = {s: _rows("sixth_run", entry["dim"], entry["data"], s, runs) for s in seeds}
    complete = [s for s in seeds if no_vq[s]]
    if not complete:
        return {}
    targets = calibrate_from([r["rank/context"] for s in complete for r in no_vq[s]],
                             [r["rank/target"] for s in complete for r in no_vq[s]],
                             [no_vq[s][-1]["val/loss_reference"] for s in complete])
    verdicts = {}
    for name, t in (("calibrated", targets), ("seed", SEED)):
        for config, by_seed in (("diagnostic_no_vq", no_vq), ("sixth_run", sixth)):
            judged = [checklist(rows, epochs, t) for rows in by_seed.values() if rows]
            verdicts[f"{config}/{name}"] = {k: c["passed"] for k, c in across_seeds(judged).items() if c["applicable"]}
    return {"seeds_run": complete, "signature": sum(seed_signature(rows)["reproduced"] for rows in sixth.values() if rows),
            "sixth_runs": sum(bool(rows) for rows in sixth.values()), "calibrated": targets.as_dict(), "seed": SEED.as_dict(),
            # the seed's literal rank bars mean something again at a rung where its own no-VQ runs clear them
            "literal_met_by_no_vq": {"context_rank": min(r["rank/context"] for s in complete for r in no_vq[s]) > SEED.context_rank,
                                     "target_rank": min(r["rank/target"] for s in complete for r in no_vq[s]) > SEED.target_rank},
            "pass_counts": verdicts}


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = [e for e in summary["rungs"] if math.isfinite(e["closeness"])]
    labels = [f"{e['dim']}\n{e['data']}" for e in rungs]
    first = [e["seeds"][str(summary["seeds"][0])]["no_vq"] for e in rungs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, key, seed_key, name in ((axes[0], "context", "context_rank", "context rank"),
                                    (axes[1], "target", "target_rank", "target rank")):
        x = range(len(rungs))
        ax.plot(x, [f[f"{key}_first"] for f in first], "o-", color="tab:blue", label="no-VQ, epoch 1")
        ax.plot(x, [f[f"{key}_end"] for f in first], "s-", color="tab:green", label="no-VQ, last epoch")
        ax.axhline(summary["seed_no_vq"][seed_key][0], color="tab:blue", ls=":", label="seed's no-VQ, first")
        ax.axhline(summary["seed_no_vq"][seed_key][1], color="tab:green", ls=":", label="seed's no-VQ, last")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_title(f"{name} of the no-VQ diagnostic per rung (dim, data)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# rung: the failure-seeking search at the chosen rung


def rung_space(chosen: dict, out: Path) -> Path:
    """spaces/collapse.yaml at the rung: its width fixed (no longer searched) and the rung's data
    set, the budget RUNG_BUDGET (the rung's epochs cost a multiple of dim 64's); written to `out`."""
    space = yaml.safe_load((ROOT / COLLAPSE_SPACE).read_text())
    space["base"] = str((ROOT / "spaces" / space["base"]).resolve())
    space["params"].pop("model.dim", None)
    for item in rung_overrides(chosen["dim"], chosen["data"]):
        key, value = item.split("=", 1)
        space.setdefault("set", {})[key] = yaml.safe_load(value)
    space["budget"] = {**space["budget"], **RUNG_BUDGET}
    atomic_write_text(out, f"# {COLLAPSE_SPACE} at the ladder's chosen rung, written by `{command('rung')}`\n"
                      + yaml.safe_dump(space, sort_keys=False))
    return out


def stage_rung(workers: int = 2, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    ladder = read_json(docs / "ladder.json")
    if not ladder.get("chosen"):
        raise SystemExit(f"no rung chosen yet: run `{command('ladder')}` first")
    exp_dir = ROOT / "results" / RUNG_NAME
    space = rung_space(ladder["chosen"], runs / "ladder" / "collapse-rung.yaml")
    shown = str(space.relative_to(ROOT)) if space.is_relative_to(ROOT) else str(space)
    search_once(shown, exp_dir, workers)
    summary = summarise_collapse(exp_dir, docs, name="rung", command_text=command("rung"), space_path=shown)
    summary["chosen"] = ladder["chosen"]
    atomic_write_json(docs / "rung.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# distance: the production config over its full epochs, as it is and with each variant; the
# variant chosen on DISTANCE_SEEDS is then run beside it on seeds it was not chosen on


def stage_distance(workers: int = 2, seeds: tuple[int, ...] = DISTANCE_SEEDS,
                   held_out: tuple[int, ...] = DISTANCE_HELD_OUT_SEEDS, variants: dict | None = None,
                   docs: Path = DOCS, runs: Path = RUNS, epochs: int | None = None,
                   overrides: tuple[str, ...] = ()) -> dict:
    """configs/stable_production.yaml as it is and with each variant's overrides over `seeds` for
    its full epochs (or `epochs`); the variant chosen there (choose_variant) and the production
    config as it is over `held_out`; then summarised. Runs already finished are kept."""
    variants = DISTANCE_VARIANTS if variants is None else variants
    extra = [f"training.epochs={epochs}"] if epochs else []

    def run(names: list[str], over: tuple[int, ...]) -> None:
        run_many([(PRODUCTION_CONFIG, f"{name}-seed{s}", runs / "distance",
                   [f"seed={s}", "training.num_threads=1", *variants[name], *extra, *overrides])
                  for name in names for s in over
                  if not (runs / "distance" / f"{name}-seed{s}" / "status.json").is_file()], workers)

    run(list(variants), seeds)
    summary = summarise_distance(seeds, held_out, variants, docs, runs, epochs)
    chosen = summary["chosen"]
    if chosen and held_out:
        run(held_out_names(variants, chosen), held_out)
        summary = summarise_distance(seeds, held_out, variants, docs, runs, epochs)
    return summary


def choose_variant(variants: dict[str, dict]) -> str | None:
    """The variant (summarise_distance's entries) that passed every item in every seed it ran,
    with the fewest overrides (the smallest change to the production config; the first listed
    among equals); None if no variant did."""
    passing = [name for name, v in variants.items()
               if v["seeds"] and all(not e["failed"] for e in v["seeds"].values())]
    return min(passing, key=lambda name: len(variants[name]["overrides"]), default=None)


def held_out_names(variants: dict, chosen: str) -> list[str]:
    """What runs on the held-out seeds: the production config as it is (the first variant) and the
    chosen variant (once, if the chosen one is the production config)."""
    return list(dict.fromkeys([next(iter(variants)), chosen]))


def _judge_runs(names: list[str], seeds: tuple[int, ...], variants: dict, runs: Path, planned: int, targets) -> dict:
    """Per variant: each seed's run (status, epochs, best-val epoch, final metrics, failed items,
    seconds per epoch) and how many seeds passed each item."""
    out = {}
    for name in names:
        per_seed, judged = {}, []
        for s in seeds:
            run_dir = runs / "distance" / f"{name}-seed{s}"
            rows = read_jsonl(run_dir / "metrics.jsonl")
            if not rows:
                continue
            items = checklist(rows, planned, targets)
            judged.append(items)
            per_seed[str(s)] = {"status": read_json(run_dir / "status.json").get("status", "missing"),
                                "epochs": len(rows), "best_val_loss_epoch": min(rows, key=lambda r: r["val/loss"])["epoch"],
                                "final": {k: rows[-1][k] for k in ("val/loss_reference", "rank/context", "rank/target",
                                                                   "codebook/usage")},
                                "failed": [v["label"] for v in items.values() if v["pass"] is False],
                                "epoch_s": sum(r["time/epoch_s"] for r in rows) / len(rows),
                                "run_s": sum(r["time/epoch_s"] for r in rows)}
        out[name] = {"overrides": variants[name], "seeds": per_seed,
                     "pass_counts": {k: c["passed"] for k, c in across_seeds(judged).items()}}
    return out


def summarise_distance(seeds: tuple[int, ...] = DISTANCE_SEEDS, held_out: tuple[int, ...] = DISTANCE_HELD_OUT_SEEDS,
                       variants: dict | None = None, docs: Path = DOCS, runs: Path = RUNS,
                       epochs: int | None = None) -> dict:
    """docs/study/distance.json: every variant over `seeds`, the chosen one (choose_variant) and
    the production config over `held_out` (where they ran), judged with the calibrated targets."""
    from search.targets import calibrated

    variants = DISTANCE_VARIANTS if variants is None else variants
    planned = epochs or yaml.safe_load(PRODUCTION_CONFIG.read_text())["training"]["epochs"]
    targets = calibrated()
    judged = _judge_runs(list(variants), seeds, variants, runs, planned, targets)
    chosen = choose_variant(judged)
    held = _judge_runs(held_out_names(variants, chosen), held_out, variants, runs, planned, targets) if chosen else {}
    run_s = sum(e.get("run_s", 0.0) for part in (judged, held) for v in part.values() for e in v["seeds"].values())
    summary = {"command": command("distance"), "config": str(PRODUCTION_CONFIG.relative_to(ROOT)), "epochs": planned,
               "seeds": list(seeds), "targets": targets.as_dict(), "variants": judged, "chosen": chosen,
               "held_out": {"seeds": list(held_out), "variants": held}, "runs_core_s": round(run_s, 1)}
    atomic_write_json(docs / "distance.json", summary)
    return summary
