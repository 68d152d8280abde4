"""search/race.py: the racing rule and the ranking on cases worked out by hand, the bound a run
reports, and a real race through Ray (a contract trainer whose finalists are lucky on the search's
own seed or robust on every seed)."""

import json
import math
import textwrap

import pytest

from search.judge import can_still_pass, checklist
from search.metrics import item_ids
from search.race import SeedRun, eliminated, ranking
from search.score import checklist_score, margin_of
from tests.conftest import ROOT, run_script

N = len(item_ids())


def test_a_failure_judged_over_every_epoch_lowers_the_bound_for_good():
    row = {"epoch": 1, "codebook/usage": 0.05, "rank/context": 5.0, "rank/target": 30.0, "val/loss": 5.0,
           "grad/norm_mean": 3.0, "grad/norm_max": 200.0}
    items = checklist([row], planned_epochs=3)
    # usage (every epoch) and grad max (every epoch) are failed for good; context rank, "ran all
    # epochs" and val loss are judged at the end and may still pass
    assert {k for k, v in items.items() if v["pass"] is False} == {"usage_throughout", "grad_norm_max",
                                                                   "context_rank", "completed_all_epochs"}
    assert can_still_pass(items) == N - 2


def test_a_finalist_is_dropped_only_when_its_worst_seed_cannot_reach_the_best_finished_worst_seed():
    done8 = [SeedRun(True, 8), SeedRun(True, 8)]
    assert eliminated({"a": done8, "b": [SeedRun(False, 5, 7), SeedRun(False)]}) == {"b"}  # 7 < 8
    assert eliminated({"a": done8, "b": [SeedRun(False, 5, 8), SeedRun(False)]}) == set()  # can still tie
    assert eliminated({"a": [SeedRun(True, 8), SeedRun(False, 6, 8)], "b": [SeedRun(False, 1, 2)]}) == set()  # a not done
    done6 = [SeedRun(True, 8), SeedRun(True, 6)]  # a's worst seed passed 6
    assert eliminated({"a": done6, "b": [SeedRun(True, 7), SeedRun(False, 3, 6)]}) == set()
    assert eliminated({"a": done6, "b": [SeedRun(True, 5), SeedRun(False)]}) == {"b"}  # an ended seed: exact
    assert SeedRun(False).upper_bound == N and SeedRun(True, 3, 7).upper_bound == 3


def test_the_winner_passes_most_in_its_worst_seed_then_has_the_larger_mean_margin():
    finalists = [{"trial_id": "lucky", "worst_passed": 7, "mean_margin": 3.0, "order": 0},
                 {"trial_id": "robust", "worst_passed": 8, "mean_margin": 1.1, "order": 1},
                 {"trial_id": "robust2", "worst_passed": 8, "mean_margin": 1.2, "order": 2}]
    assert [f["trial_id"] for f in ranking(finalists)] == ["robust2", "robust", "lucky"]


def test_the_margin_comes_back_from_the_score():
    assert margin_of(checklist_score({"a": {"pass": True}} | {"b": {"pass": False}}, 1.5)) == pytest.approx(1.5)
    assert math.isnan(margin_of(-1.0))


RACER = textwrap.dedent('''
    """A toy trainer whose fragile configs are healthy only on the search's own seed (the space's,
    under 1000), not on the race's fresh ones."""


    def train(config, run):
        fragile = config["fragile"] and run.seed >= 1000
        for epoch in range(1, run.epochs + 1):
            usage = 0.05 if fragile else 0.2 + 0.5 * config["x"]
            run.report({"val/loss": 1.0 / epoch, "codebook/usage": usage, "rank/context": 30.0,
                        "grad/norm_mean": 1.0, "grad/norm_max": 2.0})
''')


def race_space(num_samples: int, top_k: int, epochs: int) -> str:
    """The racer's space: one trial at a time (so the race runs in plan order), 2 fresh seeds."""
    return textwrap.dedent(f"""
        trainer: racer:train
        params:
          x: {{dist: uniform, low: 0, high: 1}}
          fragile: {{dist: categorical, choices: [true, false]}}
        objective: {{targets: seed, target_rank_weight: 0.0}}
        budget: {{num_samples: {num_samples}, max_epochs: 2, grace_period: 2, reduction_factor: 2, max_concurrent: 1}}
        final: {{top_k: {top_k}, seeds: 2, epochs: {epochs}}}
        resources: {{cpu: 1}}
        sampler: random
        seed: 3
    """)


def test_a_race_drops_the_lucky_and_exports_the_robust(tmp_path):
    """Every trial passes every item on the search's own seed, ranked by x; on fresh seeds a fragile
    config fails usage from its first epoch. The race runs the finalists in the exploration's
    order (one run at a time here, so the order is the plan's): a fragile finalist behind a
    finished robust one is dropped at its first report and its other seed never starts; the
    winner is the best robust finalist, exported at the race's epochs."""
    (tmp_path / "racer.py").write_text(RACER)
    (tmp_path / "space.yaml").write_text(race_space(num_samples=8, top_k=4, epochs=3))
    proc = run_script(str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage", "results", "--name", "race",
                      cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "results" / "race"
    plan, outcome = json.loads((exp / "race_plan.json").read_text()), json.loads((exp / "race.json").read_text())
    order = [f["trial_id"] for f in plan["finalists"]]
    fragile = {f["trial_id"]: f["params"]["fragile"] for f in plan["finalists"]}
    first_robust = next(t for t in order if not fragile[t])
    assert fragile[order[0]], "the test's seed must put a lucky config first (change `seed:` if not)"
    behind = [t for t in order[order.index(first_robust):] if fragile[t]]
    assert behind, "the test's seed must put a fragile finalist behind a robust one"
    assert outcome["finished"] and outcome["winner"] == first_robust
    assert outcome["summary"] == "7/7 in 2/2 fresh seeds at 3 epochs" and outcome["winner_failures"] == []
    for t in order:
        f, seeds = outcome["finalists"][t], list(outcome["finalists"][t]["seeds"].values())
        if t in behind:  # dropped: its first seed stopped at its first report, its second never started
            assert f["dropped"] and [s["status"] for s in seeds] == ["dropped", "dropped"], f
            assert [s["epochs"] for s in seeds] == [1, 0]
        elif fragile[t]:  # ahead of every robust finalist: nothing to be dropped against, runs every seed
            assert not f["dropped"] and [s["epochs"] for s in seeds] == [3, 3] and f["worst_passed"] == 6
        else:
            assert f["worst_passed"] == 7
    assert outcome["trial_epochs"] == 3 * 2 * (len(order) - len(behind)) + len(behind)
    best = json.loads((exp / "best_trial.json").read_text())
    assert best["trial_id"] == first_robust and best["final_race"]["summary"] == outcome["summary"]
    assert "final race: 7/7 in 2/2 fresh seeds at 3 epochs" in proc.stdout
    import yaml

    assert yaml.safe_load((exp / "best_config.yaml").read_text())["epochs"] == 3  # the race's budget


@pytest.mark.slow
def test_a_race_whose_driver_is_killed_resumes_and_runs_each_seed_once(tmp_path):
    """SIGKILL of the driver while the race runs, then --resume: the exploration is not run again,
    the race continues from Ray's snapshot of its experiment, every (finalist, seed) has exactly
    one trial, and the outcome is the one an uninterrupted race gives."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_for

    (tmp_path / "racer.py").write_text(RACER.replace("    for epoch in range(1, run.epochs + 1):",
                                                     "    import time\n    for epoch in range(1, run.epochs + 1):\n"
                                                     "        time.sleep(0.4 if run.seed >= 1000 else 0.0)"))
    (tmp_path / "space.yaml").write_text(race_space(num_samples=6, top_k=3, epochs=8))
    exp = tmp_path / "results" / "race"
    command = [sys.executable, str(ROOT / "scripts" / "search.py"), "space.yaml", "--storage", "results", "--name", "race"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:  # the second race run has reported an epoch: the race is under way
        wait_for(lambda: sum(p.stat().st_size > 0 for p in (exp / "final").glob("*/result.json")) >= 2, timeout=300)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (exp / "race.json").is_file()
    resumed = run_script(*command[1:], "--resume", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "final race:" in resumed.stdout
    assert len(list(exp.glob("trial_*/params.json"))) == 6, "the exploration was not run again"
    plan, outcome = json.loads((exp / "race_plan.json").read_text()), json.loads((exp / "race.json").read_text())
    assert outcome["finished"]
    started = [json.loads(p.read_text())["race"] for p in (exp / "final").glob("*/params.json")]
    pairs = [(r["finalist"], r["seed"]) for r in started]
    assert len(pairs) == len(set(pairs)), "no (finalist, seed) ran twice"
    fragile = {f["trial_id"]: f["params"]["fragile"] for f in plan["finalists"]}
    order = [f["trial_id"] for f in plan["finalists"]]
    assert outcome["winner"] == next(t for t in order if not fragile[t])
    assert outcome["finalists"][outcome["winner"]]["worst_passed"] == 7
