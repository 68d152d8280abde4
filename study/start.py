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
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from model.io import atomic_write_json
from search.export import read_json, read_jsonl
from search.runs import TrainRun
from study.common import plot_runs, run_many, run_summary, search_once
from study.protocol import (DOCS, ROOT, RUNS, START_COLLAPSE_NAME, START_COLLAPSE_SPACE, START_EPOCHS,
                            START_GRID_COLOUR_STDS, START_GRID_INITS, START_RUNS, START_SEEDS, START_VARIANT_RUNS,
                            command)


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


def stage_start_grid(workers: int = 2, seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS,
                     docs: Path = DOCS, runs: Path = RUNS) -> dict:
    """One epoch of the sixth run per (init, colour std, seed), then the chosen variant's runs."""
    jobs = [(ROOT / "configs" / "sixth_run.yaml", grid_name(init, std, s), runs / "start_grid",
             [f"seed={s}", "training.epochs=1", "training.num_threads=1", f"vq.init={init}",
              f"model.colour_init_std={'null' if std is None else std}"])
            for init in START_GRID_INITS for std in START_GRID_COLOUR_STDS for s in seeds]
    jobs += [(ROOT / "configs" / f"{config}.yaml", run_name(name, s), runs / "start_grid",
              [f"seed={s}", f"training.epochs={epochs}", "training.num_threads=1", *extra])
             for name, config, extra in START_VARIANT_RUNS for s in seeds]
    run_many(jobs, workers)
    return summarise_start_grid(seeds, epochs, docs, runs)


def summarise_start_grid(seeds: tuple[int, ...] = START_SEEDS, epochs: int = START_EPOCHS, docs: Path = DOCS,
                         runs: Path = RUNS) -> dict:
    """docs/study/start_grid.json and start_grid.png: the grid's epoch-1 states, the variant's runs."""
    grid = []
    for init in START_GRID_INITS:
        for std in START_GRID_COLOUR_STDS:
            for s in seeds:
                rows = read_jsonl(runs / "start_grid" / grid_name(init, std, s) / "metrics.jsonl")
                grid.append({"init": init, "colour_init_std": std, "seed": s,
                             **{k: rows[0].get(k, math.nan) if rows else math.nan
                                for k in ("codebook/usage", "rank/context", "rank/target")}})
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
            entry.update({"base": config, "overrides": list(extra), "refreshes": refreshes(rows),
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


def stage_start_collapse(workers: int = 2, docs: Path = DOCS) -> dict:
    """The failure-seeking search from the start of section 17 (START_COLLAPSE_SPACE), run (or
    resumed) with the real search script, summarised like the collapse stage's."""
    from study.collapse import summarise_collapse

    exp_dir = ROOT / "results" / START_COLLAPSE_NAME
    search_once(START_COLLAPSE_SPACE, exp_dir, workers)
    return summarise_collapse(exp_dir, docs, name="startcollapse", command_text=command("startcollapse"),
                              space_path=START_COLLAPSE_SPACE)
