"""Does the final race pick a config that holds where the single-seed winner does not? (Issue 31.)

    race   the README's main command (spaces/vq_gentle.yaml, its final race included) run as
           results/study-race, then `scripts/verify.py --seeds 3 --top K` retrains every finalist,
           in the race's order, on seeds neither the exploration nor the race used (1000, ...);
           the summary sets the exploration's single-seed winner (the trial the search would export
           without its race: the first finalist) against the race's winner, seed by seed, over the
           race's seeds and the held-out ones, at the same production budget

A config "fails" a seed when it misses any checklist item there (the calibrated targets, the
experiment's targets.json). Both configs are judged on the same seeds and epochs; the race's own
cost is its trial-epochs beside the exploration's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from model.io import atomic_write_json
from search.export import read_json, read_jsonl
from search.judge import checklist, verdict
from search.targets import read_judging
from study.protocol import DOCS, MAIN_SPACE, RACE_NAME, RACE_VERIFY_SEEDS, ROOT, command


def stage_race(workers: int = 2, exp_dir: Path | None = None, docs: Path = DOCS) -> dict:
    """Run (or resume, or reuse) the main command as results/study-race, verify every finalist on
    held-out seeds unless verify.json exists, then summarise."""
    exp_dir = exp_dir or ROOT / "results" / RACE_NAME
    if not (exp_dir / "race.json").is_file() or not read_json(exp_dir / "race.json").get("finished"):
        cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), MAIN_SPACE, "--name", exp_dir.name,
               "--storage", str(exp_dir.parent)]
        subprocess.run(cmd + (["--resume"] if exp_dir.is_dir() else []), cwd=ROOT, check=True)
    finalists = len(read_json(exp_dir / "race_plan.json")["finalists"])
    if not (exp_dir / "verify.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "verify.py"), str(exp_dir), "--seeds",
                        str(RACE_VERIFY_SEEDS), "--top", str(finalists), "--jobs", str(workers)], cwd=ROOT, check=True)
    return summarise_race(exp_dir, docs)


def _per_seed(exp_dir: Path, trial_id: str, race: dict, planned: int, targets) -> dict[str, dict]:
    """A finalist's verdict on each race seed (race.json) and each held-out seed (verify/ runs)."""
    seeds = {f"race {s}": {"passed": v["verdict"]["passed"], "total": v["verdict"]["total"],
                           "failed": v["verdict"]["failed"], "epochs": v["epochs"]} if v["verdict"] else
             {"passed": 0, "total": None, "failed": [v["status"]], "epochs": 0}
             for s, v in race["finalists"][trial_id]["seeds"].items()}
    for run in sorted((exp_dir / "verify").glob(f"{trial_id}-seed*")):
        rows = read_jsonl(run / "metrics.jsonl")
        v = verdict(checklist(rows, planned, targets))
        seeds[f"held-out {run.name.rsplit('seed', 1)[1]}"] = {"passed": v["passed"], "total": v["total"],
                                                              "failed": v["failed"], "epochs": len(rows)}
    return seeds


def summarise_race(exp_dir: Path, docs: Path = DOCS) -> dict:
    """docs/study/race.json: the single-seed winner against the race's winner, seed by seed."""
    race, plan = read_json(exp_dir / "race.json"), read_json(exp_dir / "race_plan.json")
    targets = read_judging(exp_dir).targets
    single = plan["finalists"][0]["trial_id"]
    configs = {}
    shown = [("single-seed winner", single), ("race winner", race["winner"])]
    shown += [(f"finalist {i}", f["trial_id"]) for i, f in enumerate(plan["finalists"], 1)
              if f["trial_id"] not in (single, race["winner"])]
    for role, trial_id in shown:
        seeds = _per_seed(exp_dir, trial_id, race, race["epochs"], targets)
        configs[role] = {"trial_id": trial_id, "exploration_score": race["finalists"][trial_id]["exploration_score"],
                         "seeds": seeds, "failed_seeds": sum(bool(v["failed"]) for v in seeds.values())}
    explored = sum(len(read_jsonl(p)) for p in exp_dir.glob("*/run/metrics.jsonl"))
    summary = {"command": command("race"), "experiment": str(exp_dir.relative_to(ROOT) if exp_dir.is_relative_to(ROOT)
                                                              else exp_dir),
               "space": MAIN_SPACE, "epochs": race["epochs"], "race_seeds": race["seeds"],
               "held_out_seeds": read_json(exp_dir / "verify.json").get("seeds", []), "targets": targets.as_dict(),
               "same_config": single == race["winner"], "configs": configs, "summary": race["summary"],
               "exploration_trial_epochs": explored, "race_trial_epochs": race["trial_epochs"],
               "race_trial_epochs_without_stopping": race["trial_epochs_without_stopping"],
               "ranking": race["ranking"]}
    atomic_write_json(docs / "race.json", summary)
    return summary
