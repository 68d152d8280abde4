"""The seed's starting state (Part 4 of docs/study.md): why our sixth run's codebook was born at
10 codes, and the seed's question asked again from a start closer to the seed's.

    anatomy   the codebook and the tokens at initialisation, per seed, measured on the val split's
              context tokens: how much of the tokens' variance is their colour, the scale of the
              colour embedding against the projected geometry, how many codes are nearest to some
              token with the codebook drawn on the model's own seed (the code before the codebook got
              a stream of its own, model/quantizers/_codebook.py: codebook_generator) and on its own
              stream, and how close the codebook's rows come to the colour embeddings
    runs      START_RUNS (protocol.py) over START_SEEDS for START_EPOCHS, every epoch logged up to
              where the trainer's own rule stops a run; per refresh, the usage just after it and
              just before the next (do revived codes stay used?)

Stage `startgrid`: the sixth run's state after one epoch over START_GRID_INITS x
START_GRID_COLOUR_STDS and START_SEEDS (where does a start like the seed's, 20-30% usage and a
context rank near 6, lie?), then START_VARIANT_RUNS as in `start` (docs/study/start_grid.json).

Stage `startrung`: the same at the ladder's chosen rung (its width and data, study/ladder.py:
rung_overrides): the first epoch over START_RUNG_COLOUR_STDS, then rung_runs: START_RUNG_RUNS from
the cell nearest the seed's start, the quantized one also from the cell nearest its usage
(docs/study/start_rung.json).

Stage `startcollapse`: the failure-seeking search from section 17's start; each trial with the
seed's signature over START_SIGNATURE_SEEDS, and with each searched value put back to the base
config's, one at a time (the switch that removes it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from model.io import atomic_write_json
from search.export import read_json, read_jsonl
from search.runs import TrainRun
from study.signature import SEED_SIXTH_RUN, SIGNATURE_BY_EPOCH, usage_decay
from study.common import plot_runs, run_many, run_summary, search_once, without_root
from study.protocol import (DOCS, ROOT, RUNS, START_COLLAPSE_NAME, START_COLLAPSE_SPACE, START_EPOCHS,
                            START_GRID_COLOUR_STDS, START_GRID_INITS, START_RUNG_COLOUR_STDS, START_RUNG_RUNS,
                            START_RUNS, START_SEEDS, START_SIGNATURE_SEEDS, START_VARIANT_RUNS, command)


def colour_r2(tokens: torch.Tensor, colours: torch.Tensor) -> float:
    """Share of the tokens' variance explained by their colour: 1 - within-colour sum of squares /
    total sum of squares (the R^2 of a one-way ANOVA, colour as the factor). tokens [M, D], colours [M]."""
    total = (tokens - tokens.mean(0)).pow(2).sum()
    within = sum((tokens[colours == c] - tokens[colours == c].mean(0)).pow(2).sum() for c in colours.unique())
    return float(1 - within / total)


def codes_nearest(tokens: torch.Tensor, codebook: torch.Tensor) -> int:
    """How many codes are the nearest code of at least one token (eq. 1 of the VQ-VAE)."""
    from model.quantizers._codebook import nearest_code

    return int(nearest_code(tokens, codebook).unique().numel())


def max_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest cosine similarity between a row of a [N, D] and a row of b [K, D]."""
    return float((torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T).max())


def anatomy(config: str, seed: int, overrides: tuple[str, ...] = ()) -> dict:
    """The model of `config` as the trainer builds it for `seed` (torch.manual_seed(seed), then
    build_model), before any step, on the val split's context tokens (as evaluate sees them)."""
    from model.config import load_config
    from model.data import iterate_batches, load_arc_data, make_examples
    from model.quantizers._codebook import initial_codebook
    from model.train import build_model

    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"seed={seed}", *overrides])
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    val = make_examples(data.val_tasks, cfg.data.context_length, torch.Generator().manual_seed(cfg.seed + 1))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).eval()
    encoder = model.context_encoder
    tokens, colours, colour_part, geometry_part = [], [], [], []
    with torch.no_grad():
        for batch in iterate_batches(data.records, *val, cfg.training.batch_size, torch.device("cpu")):
            m = batch.context_packing.num_tokens  # the context tokens come first
            tokens.append(encoder(batch.features[:m], batch.colours[:m], batch.context_packing))
            colours.append(batch.colours[:m])
            colour_part.append(encoder.colour(batch.colours[:m]))
            geometry_part.append(encoder.features(batch.features[:m]))
    z, c = torch.cat(tokens), torch.cat(colours)
    own = model.quantizer.codebook_tensor().detach()
    # the codebook as the code before codebook_generator drew it: on a generator seeded with the bare seed
    shared = initial_codebook(own.shape[0], own.shape[1], cfg.vq.init, cfg.seed,
                              generator=torch.Generator().manual_seed(cfg.seed))
    table = encoder.colour.weight.detach()
    return {"config": config, "seed": seed, "overrides": list(overrides), "tokens": int(z.shape[0]),
            "colours": int(c.unique().numel()), "num_codes": int(own.shape[0]),
            "colour_r2": colour_r2(z, c),
            "colour_embedding_norm": float(torch.cat(colour_part).norm(dim=1).mean()),
            "geometry_norm": float(torch.cat(geometry_part).norm(dim=1).mean()),
            "token_norm": float(z.norm(dim=1).mean()), "code_norm": float(own.norm(dim=1).mean()),
            "codes_at_init_shared_stream": codes_nearest(z, shared), "codes_at_init_own_stream": codes_nearest(z, own),
            "max_cos_colour_shared_stream": max_cosine(table, shared),
            "max_cos_colour_own_stream": max_cosine(table, own)}


def refreshes(rows: list[dict]) -> list[dict]:
    """Per refresh (an epoch whose codebook/refreshed > 0): the usage the epoch before it, at it,
    and at the last epoch before the next refresh (or the run's end): do revived codes stay used?"""
    at = [i for i, r in enumerate(rows) if r.get("codebook/refreshed", 0) > 0]
    out = []
    for n, i in enumerate(at):
        last = (at[n + 1] if n + 1 < len(at) else len(rows)) - 1
        out.append({"epoch": rows[i]["epoch"], "refreshed": rows[i]["codebook/refreshed"],
                    "usage_before": rows[i - 1]["codebook/usage"] if i > 0 else math.nan,
                    "usage_at": rows[i]["codebook/usage"], "usage_next_epoch": rows[i + 1]["codebook/usage"]
                    if i + 1 < len(rows) else math.nan,
                    "usage_before_next": rows[last]["codebook/usage"], "until_epoch": rows[last]["epoch"]})
    return out


def config_has_codebook(config: str, overrides: tuple[str, ...]) -> bool:
    from model.config import load_config

    cfg = load_config(ROOT / "configs" / f"{config}.yaml", list(overrides))
    return cfg.vq.enabled and cfg.vq.kind in ("ema", "gradient")


def run_name(name: str, seed: int) -> str:
    return f"{name.replace(' ', '_').replace(',', '')}-seed{seed}"


def stage_start(workers: int = 2, seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS,
                runs_spec: tuple = START_RUNS, overrides: tuple[str, ...] = (), docs: Path = DOCS,
                runs: Path = RUNS) -> dict:
    """The anatomy at initialisation, then every run of `runs_spec` over `seeds`, then the summary."""
    quantized = [(config, extra) for _, config, extra in runs_spec if config_has_codebook(config, extra)]
    atomic_write_json(docs / "start_anatomy.json",
                      {"command": command("start"), "anatomy": [anatomy(config, s, (*extra, *overrides))
                                                                for config, extra in quantized for s in seeds]})
    jobs = [(ROOT / "configs" / f"{config}.yaml", run_name(name, s), runs / "start",
             [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *extra, *overrides])
            for name, config, extra in runs_spec for s in seeds]
    run_many(jobs, workers)
    return summarise_start(seeds, epochs, runs_spec, docs, runs)


def grid_name(init: str, std: float | None, seed: int) -> str:
    return f"grid-{init}-std{'default' if std is None else std}-seed{seed}"

def grid_cells(grid: list[dict]) -> dict[tuple, list[dict]]:
    """A grid's epoch-1 rows by cell: {(init, colour std): [one row per seed]}."""
    cells: dict[tuple, list[dict]] = {}
    for g in grid:
        cells.setdefault((g["init"], g["colour_init_std"]), []).append(g)
    return cells

def _grid_rows(folder: Path, cells: list[tuple], seeds: tuple[int, ...]) -> list[dict]:
    out = []
    for init, std in cells:
        for s in seeds:
            rows = read_jsonl(folder / grid_name(init, std, s) / "metrics.jsonl")
            out.append({"init": init, "colour_init_std": std, "seed": s,
                        **{k: rows[0].get(k, math.nan) if rows else math.nan
                           for k in ("codebook/usage", "rank/context", "rank/target")}})
    return out

def cell_mean(rows: list[dict], key: str) -> float:
    return sum(g[key] for g in rows) / len(rows) if rows else math.nan

def seed_start_distance(usage: float, rank: float) -> float:
    """How far an epoch-1 state is from the seed's (SEED_SIXTH_RUN: usage 24%, context rank 6.4):
    |usage / 0.24 - 1| + |rank / 6.4 - 1| (0: the seed's start; each term a relative miss)."""
    return abs(usage / SEED_SIXTH_RUN["usage"][0] - 1) + abs(rank / SEED_SIXTH_RUN["context_rank_start"] - 1)

def nearest_seed_start(cells: dict[tuple, list[dict]]) -> tuple:
    """The cell whose mean epoch-1 usage and context rank are nearest the seed's start."""
    return min(cells, key=lambda c: seed_start_distance(cell_mean(cells[c], "codebook/usage"),
                                                        cell_mean(cells[c], "rank/context")))

def nearest_seed_usage(cells: dict[tuple, list[dict]]) -> tuple:
    """The cell whose mean epoch-1 usage is nearest the seed's start (24%), whatever its rank."""
    return min(cells, key=lambda c: abs(cell_mean(cells[c], "codebook/usage") - SEED_SIXTH_RUN["usage"][0]))

def _colour_std(std: float | None) -> str:
    """The override that sets the colour embedding's std (None: nn.Embedding's default)."""
    return f"model.colour_init_std={'null' if std is None else std}"

def _std_text(std: float | None) -> str:
    return "default" if std is None else f"{std:g}"

def rung_runs(grid: list[dict]) -> tuple[tuple, ...]:
    """The runs at the rung, (name, config, overrides): START_RUNG_RUNS with the colour std of the
    cell nearest the seed's start in both (nearest_seed_start); the quantized one also with the cell
    nearest in usage alone, if that is another cell (a run that starts with a healthy share of its
    codes is the one that can decay as the seed's did)."""
    cells = grid_cells(grid)
    chosen = [nearest_seed_start(cells)]
    chosen += [c for c in [nearest_seed_usage(cells)] if c not in chosen]
    return tuple((f"{name}, colour std {_std_text(std)}", config, (*extra, _colour_std(std)))
                 for n, (_, std) in enumerate(chosen)
                 for name, config, extra in (START_RUNG_RUNS if n == 0 else START_RUNG_RUNS[:1]))


def stage_start_grid(workers: int = 2, seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS,
                     docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """One epoch of the sixth run per (init, colour std, seed), then the chosen variant's runs."""
    jobs = [(ROOT / "configs" / "sixth_run.yaml", grid_name(init, std, s), runs / "start_grid",
             [f"seed={s}", "training.epochs=1", "training.num_threads=1", f"vq.init={init}", _colour_std(std)])
            for init in START_GRID_INITS for std in START_GRID_COLOUR_STDS for s in seeds]
    jobs += [(ROOT / "configs" / f"{config}.yaml", run_name(name, s), runs / "start_grid",
              [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *extra])
             for name, config, extra in START_VARIANT_RUNS for s in seeds]
    run_many(jobs, workers)
    return summarise_start_grid(seeds, epochs, docs, runs)


def summarise_start_grid(seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS, docs: Path = DOCS,
                         runs: Path = RUNS) -> dict:
    """docs/study/start_grid.json and start_grid.png: the grid's epoch-1 states, the variant's runs."""
    grid = _grid_rows(runs / "start_grid", [(i, c) for i in START_GRID_INITS for c in START_GRID_COLOUR_STDS], seeds)
    summary = {"command": command("startgrid"), "epochs": epochs, "seeds": list(seeds), "grid": grid,
               "runs": _start_runs(START_VARIANT_RUNS, seeds, epochs, runs / "start_grid")}
    atomic_write_json(docs / "start_grid.json", summary)
    plot_runs(summary["runs"], docs / "start_grid.png",
              f"from a start like the seed's (k-means init): seeds {list(seeds)}, {epochs} epochs", seed_points=True)
    return summary


def _start_runs(runs_spec: tuple, seeds: tuple[int, ...], epochs: int, folder: Path) -> list[dict]:
    """Each run of `runs_spec` x `seeds` in `folder`: its summary, refreshes and first epoch."""
    out = []
    for name, config, extra in runs_spec:
        for s in seeds:
            run_dir = folder / run_name(name, s)
            rows = read_jsonl(run_dir / "metrics.jsonl")
            run = TrainRun(run_dir.name, rows=rows, status=read_json(run_dir / "status.json").get("status", "missing"))
            entry = run_summary(name, run.name, run, epochs)
            entry.update({"base": config, "overrides": list(extra), "refreshes": refreshes(rows), "decay": usage_decay(rows),
                          "first": {k: rows[0].get(k, math.nan) for k in ("codebook/usage", "rank/context",
                                                                          "rank/target", "val/loss")} if rows else {}})
            out.append(entry)
    return out


def summarise_start(seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS, runs_spec: tuple = START_RUNS,
                    docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/start.json and start.png from the anatomy and the run folders under runs/start/."""
    summary = {"command": command("start"), "epochs": epochs, "seeds": list(seeds),
               "anatomy": read_json(docs / "start_anatomy.json").get("anatomy", []),
               "runs": _start_runs(runs_spec, seeds, epochs, runs / "start")}
    atomic_write_json(docs / "start.json", summary)
    plot_runs(summary["runs"], docs / "start.png", f"from the seed's starting state: seeds {list(seeds)}, {epochs} epochs",
              seed_points=True)
    return summary


def stage_start_rung(workers: int = 2, seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS,
                     docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """At the ladder's chosen rung: the first epoch over START_RUNG_COLOUR_STDS (k-means init) and
    `seeds`; then rung_runs over `seeds` for `epochs` (finished runs kept)."""
    from study.ladder import rung_overrides

    chosen = read_json(docs / "ladder.json").get("chosen")
    if not chosen:
        raise SystemExit(f"no rung chosen yet: run `{command('ladder')}` first")
    rung, folder = rung_overrides(chosen["dim"], chosen["data"]), runs / "start_rung"
    cells = [("kmeans", std) for std in START_RUNG_COLOUR_STDS]
    run_many([(ROOT / "configs" / "sixth_run_kmeans_start.yaml", grid_name(init, std, s), folder,
               [f"seed={s}", "training.epochs=1", "training.num_threads=1", *rung, f"vq.init={init}", _colour_std(std)])
              for init, std in cells for s in seeds
              if not (folder / grid_name(init, std, s) / "status.json").is_file()], workers)
    run_many([(ROOT / "configs" / f"{config}.yaml", run_name(name, s), folder,
               [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *rung, *extra])
              for name, config, extra in rung_runs(_grid_rows(folder, cells, seeds)) for s in seeds
              if not (folder / run_name(name, s) / "status.json").is_file()], workers)
    return summarise_start_rung(chosen, seeds, epochs, docs, runs)


def summarise_start_rung(chosen: dict, seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS,
                         docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """docs/study/start_rung.json and start_rung.png from the run folders under runs/start_rung/."""
    from study.ladder import rung_overrides

    folder = runs / "start_rung"
    grid = _grid_rows(folder, [("kmeans", std) for std in START_RUNG_COLOUR_STDS], seeds)
    cells = grid_cells(grid)
    (i1, s1), (i2, s2) = nearest_seed_start(cells), nearest_seed_usage(cells)
    summary = {"command": command("startrung"), "epochs": epochs, "seeds": list(seeds), "rung": chosen,
               "rung_overrides": rung_overrides(chosen["dim"], chosen["data"]), "grid": grid,
               "nearest_cell": {"init": i1, "colour_init_std": s1}, "nearest_usage_cell": {"init": i2, "colour_init_std": s2},
               "runs": _start_runs(rung_runs(grid), seeds, epochs, folder)}
    atomic_write_json(docs / "start_rung.json", summary)
    plot_runs(summary["runs"], docs / "start_rung.png", f"from the starts nearest the seed's at dim {chosen['dim']}, "
              f"{chosen['data']}: seeds {list(seeds)}, {epochs} epochs", seed_points=True)
    return summary


def stage_start_collapse(workers: int = 2, docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """The failure-seeking search from the start of section 17 (START_COLLAPSE_SPACE), run (or
    resumed) with the real search script, summarised like the collapse stage's; then each trial that
    shows the seed's signature, over START_SIGNATURE_SEEDS for START_EPOCHS, and with each of its
    searched values put back to the base config's, one at a time, for SIGNATURE_BY_EPOCH epochs
    (the switch that removes the signature)."""
    from study.collapse import summarise_collapse

    exp_dir = ROOT / "results" / START_COLLAPSE_NAME
    search_once(START_COLLAPSE_SPACE, exp_dir, workers)
    summary = summarise_collapse(exp_dir, docs, name="startcollapse", command_text=command("startcollapse"),
                                 space_path=START_COLLAPSE_SPACE)
    folder = runs / "startcollapse"
    jobs = [job for t in summary["trials"] if t["signature"].get("reproduced")
            for job in signature_jobs(exp_dir, t, folder)]
    run_many([j for j in jobs if not (folder / j[1] / "status.json").is_file()], workers)
    return summarise_signature_trials(exp_dir, summary, docs, runs)


def _base_config():
    """The base config of START_COLLAPSE_SPACE, as the trainer would load it."""
    import yaml

    from model.config import load_config

    space = yaml.safe_load((ROOT / START_COLLAPSE_SPACE).read_text())
    return load_config((ROOT / START_COLLAPSE_SPACE).parent / space["base"])


def _value(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _signature_specs(exp_dir: Path, trial: dict) -> tuple[tuple, list[tuple]]:
    """(the trial's own runs, [its switches]) as (name, config, overrides, epochs) and, for a
    switch, (param, base value) too. Every run keeps the trainer's own patience rule (the base
    config's: the search turned it off to see every epoch of a trial)."""
    base = _base_config()
    config = exp_dir / f"trial_{trial['trial_id']}" / "run" / "config.yaml"
    patience = f"training.early_stopping.patience={json.dumps(base.training.early_stopping.patience)}"
    own = (f"sig-{trial['trial_id']}", config, (patience,), START_EPOCHS)
    switches = [((f"sig-{trial['trial_id']}-{key}", config, (patience, f"{key}={json.dumps(_value(base, key))}"),
                  SIGNATURE_BY_EPOCH), key, _value(base, key))
                for key in sorted(trial["params"]) if trial["params"][key] != _value(base, key)]
    return own, switches


def signature_jobs(exp_dir: Path, trial: dict, folder: Path,
                   seeds: tuple[int, ...] = START_SIGNATURE_SEEDS) -> list[tuple]:
    own, switches = _signature_specs(exp_dir, trial)
    return [(config, run_name(name, s), folder, [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1",
                                                  *extra])
            for name, config, extra, epochs in (own, *(spec for spec, _, _ in switches)) for s in seeds]


def signature_plot(trial_id: str) -> str:
    """The name (under docs/study/, without .png) of a signature trial's per-epoch plot."""
    return f"startcollapse_signature_{trial_id}"


def summarise_signature_trials(exp_dir: Path, summary: dict, docs: Path = DOCS, runs: Path = RUNS,
                               seeds: tuple[int, ...] = START_SIGNATURE_SEEDS) -> dict:
    """startcollapse.json gains `signature_trials`: per trial with the signature, its runs over
    `seeds` (with usage_decay: healthy first, or collapsed from the start?) and its switches."""
    folder, out = runs / "startcollapse", []
    for t in summary["trials"]:
        if not t["signature"].get("reproduced"):
            continue
        (name, config, extra, epochs), switches = _signature_specs(exp_dir, t)
        own = _start_runs(((name, str(config.relative_to(ROOT)), extra),), seeds, epochs, folder)
        out.append({"trial_id": t["trial_id"], "params": t["params"], "seeds": list(seeds), "epochs": epochs,
                    "runs": own, "switches": [
                        {"param": key, "trial_value": t["params"][key], "base_value": value, "epochs": spec[3],
                         "runs": _start_runs(((spec[0], str(config.relative_to(ROOT)), spec[2]),), seeds, spec[3], folder)}
                        for spec, key, value in switches]})
        if own:
            plot_runs(own, docs / f"{signature_plot(t['trial_id'])}.png", f"trial {t['trial_id']} (seed's signature) "
                      f"over seeds {list(seeds)}, {epochs} epochs", seed_points=True)
    summary = {**summary, "signature_trials": without_root(out)}
    atomic_write_json(docs / "startcollapse.json", summary)
    return summary
