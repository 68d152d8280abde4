"""The study's stages, listed once: `python scripts/study.py STAGE` or `python -m study STAGE`.

Each stage runs its training runs or searches (under results/study/ and results/study-*), writes
its summary (docs/study/<stage>.json) and plots, records its wall time (docs/study/wall_times.json)
and regenerates docs/study.md from every summary there is (`doc` only does the last).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from model.io import atomic_write_json
from search.export import read_json
from study import collapse, fix, ladder, patience, race, start, vqvae
from study.doc import write_study_doc
from study.protocol import DOCS


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., dict] | None  # run(workers=N) -> the stage's summary; None: the document only
    help: str


STAGES = (
    Stage("collapse", collapse.stage_collapse, "the failure-seeking search: spaces/collapse.yaml, goal: collapse"),
    Stage("confirm", collapse.stage_confirm, "sixth_run, diagnostic_no_vq, closest_to_collapse over the confirm seeds"),
    Stage("calibrate", collapse.stage_calibrate, "rank targets from the no-VQ runs -> search/calibrated_targets.yaml"),
    Stage("rankcorr", collapse.stage_rankcorr, "configs drawn from a space x 2 seeds: does the score rank them stably?"),
    Stage("main", fix.stage_main, "the README's main command, its winner verified -> configs/stable_production.yaml"),
    Stage("production", fix.stage_production, "configs/stable_production.yaml over fresh seeds, its full epochs"),
    Stage("reference", fix.stage_reference, "the no-VQ reference judged like the winner: same seeds and budgets"),
    Stage("unquantized", fix.stage_unquantized, "the production config without its quantizer, judged the same way"),
    Stage("fixes", fix.stage_fixes, "the seed's fixes, FSQ, counter-measures, context aggregators over seeds"),
    Stage("searches", fix.stage_searches, "spaces/quantizer.yaml and spaces/context.yaml searched, winners verified"),
    Stage("ladder", ladder.stage_ladder, "no-VQ and sixth run at each (dim, data) rung; every seed at the closest one"),
    Stage("rung", ladder.stage_rung, "spaces/collapse.yaml at the ladder's chosen rung"),
    Stage("distance", ladder.stage_distance, "the production config over its full epochs, variants; the chosen one on held-out seeds"),
    Stage("race", race.stage_race, "the main command's final race: the single-seed winner against the race's, on fresh seeds"),
    Stage("patience", patience.stage_patience, "the patience rule replayed on 80-epoch runs with early stopping off"),
    Stage("start", start.stage_start, "the codebook at initialisation; the sixth run from the seed's starting state, 80 epochs"),
    Stage("startgrid", start.stage_start_grid, "the sixth run's first epoch over codebook inits x colour scales; "
          "the variant that starts like the seed's, 80 epochs"),
    Stage("startrung", start.stage_start_rung, "at the ladder's chosen rung: the first epoch over colour scales; "
          "the cells nearest the seed's start (and its usage) with a no-VQ twin, 80 epochs"),
    Stage("startcollapse", start.stage_start_collapse, "the failure-seeking search from that start, past two refreshes"),
    Stage("startproduction", fix.stage_start_production, "configs/stable_production.yaml as `production` runs it, "
          "with the codebook's own stream"),
    Stage("vqvae", vqvae.stage_vqvae, "the VQ-VAE (trainer contract): its default config against its search's winner"),
    Stage("doc", None, "docs/study.md from docs/study/*.json (every stage ends with it)"),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def record_wall_time(stage: str, seconds: float, workers: int) -> None:
    """docs/study/wall_times.json: each stage's latest wall time (the document lists them)."""
    path = DOCS / "wall_times.json"
    times = read_json(path)
    times[stage] = {"wall_s": round(seconds, 1), "workers": workers, "when": time.strftime("%Y-%m-%d")}
    atomic_write_json(path, times)


def run_stage(name: str, workers: int) -> None:
    started = time.time()
    stage = BY_NAME[name]
    if stage.run is not None:
        stage.run(workers=workers)
        record_wall_time(name, time.time() - started, workers)
    path = write_study_doc()
    print(f"{name}: done in {time.time() - started:.0f} s; wrote {path}")
