"""Read an experiment folder from disk and export its best trial.

Works on a finished, running or interrupted experiment alike, since it reads only files:
each trial folder holds Ray's `params.json` and `result.json` (one line per report) and the
trainer's `run/` (config.yaml, metrics.jsonl, status.json). Writes, each atomically:

    best_config.yaml   the best trial's complete training config: scripts/train.py runs it as is
    best_trial.json    its params, metrics, and the seed's checklist evaluated on its history with the
                       experiment's targets (targets.json) and with the seed's literal ones, each
                       with a verdict (items passed / total, and which failed)
    trials.csv         one row per trial: status, epochs, score, health metrics, params

After a final race (race.json, search/race.py) the best trial is the race's winner: its
best_config.yaml carries the race's production epochs, and best_trial.json its per-seed
verdicts under "final_race".
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from model.io import atomic_write_json, atomic_write_text
from search import metrics
from search.judge import judge, ranked
from search.targets import SEED, collapsed, read_judging

RACE_OUTCOME_FILE = "race.json"  # the final race's outcome (search/race.py), when the search had one


@dataclass
class TrialRecord:
    trial_id: str
    path: Path
    params: dict
    results: list[dict] = field(default_factory=list)
    status: str = "pending"

    @property
    def last(self) -> dict:
        return self.results[-1] if self.results else {}

    def best(self, metric: str, mode: str) -> float:
        """Best finite value of metric over the trial's reports (nan if none)."""
        values = [r[metric] for r in self.results if isinstance(r.get(metric), (int, float))
                  and math.isfinite(r[metric])]
        if not values:
            return math.nan
        return max(values) if mode == "max" else min(values)

    def final(self, metric: str) -> float:
        """The metric at the trial's last report (nan if missing or not finite)."""
        value = self.last.get(metric)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan

    def value(self, metric: str, mode: str, reduce: str) -> float:
        return self.final(metric) if reduce == "last" else self.best(metric, mode)


def require_experiment_folder(path: str | Path) -> Path:
    """For entry points: the experiment folder at path, or exit 2 saying why it is not one. A URI
    (s3://bucket/prefix/NAME, search/storage.py) is mirrored into results/NAME first."""
    from search.storage import download, is_uri, locate_experiment

    if is_uri(str(path)):
        location = locate_experiment(str(path))
        try:
            download(location)
        except OSError as err:  # no such bucket or prefix, no credentials, endpoint unreachable
            print(f"error: {path}: cannot read the experiment: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        path = location.local
    exp_dir = Path(path)
    if not exp_dir.is_dir() or not any(exp_dir.glob("*/params.json")):
        print(f"error: {exp_dir}: not an experiment folder (no trial folders with params.json)", file=sys.stderr)
        raise SystemExit(2)
    return exp_dir


def publish(path: str | Path, names: list[str] | None = None) -> list[str]:
    """After an entry point wrote into a URI experiment's local mirror, upload the driver's files
    (or `names`) beside it in storage; a folder experiment needs nothing. Returns what was copied."""
    from search.storage import DRIVER_FILES, is_uri, locate_experiment, upload

    if not is_uri(str(path)):
        return []
    return upload(locate_experiment(str(path)), names or DRIVER_FILES)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: keep what came before
    return rows


def trial_status(trial: TrialRecord, collapse_floor: float, collapse_patience: int) -> str:
    """completed | early_stopped | diverged | collapsed | stopped | failed | pending."""
    last = trial.last
    if (trial.path / "error.txt").exists() or (trial.path / "error.pkl").exists():
        if not last.get("trial/finished"):
            return "failed"
    if not trial.results:
        return "pending"
    if last.get("trial/diverged"):
        return "diverged"
    if last.get("trial/finished"):
        status = read_json(trial.path / "run" / "status.json").get("status")
        return status or "completed"
    if collapsed([r.get("codebook/usage", math.nan) for r in trial.results], collapse_floor, collapse_patience):
        return "collapsed"
    return "stopped"  # by ASHA (or still running, when read during a search)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_trials(exp_dir: Path, judging=None) -> list[TrialRecord]:
    """Every trial folder of the experiment, with its status under the experiment's collapse rule
    (`judging`: another folder's, for the final race's trials in <experiment>/final)."""
    judging = judging or read_judging(exp_dir)
    trials = []
    for params_file in sorted(exp_dir.glob("*/params.json")):
        path = params_file.parent
        results = read_jsonl(path / "result.json")
        trial_id = results[-1].get("trial_id", path.name) if results else path.name.removeprefix("trial_")
        trial = TrialRecord(trial_id, path, read_json(params_file), results)
        trial.status = trial_status(trial, judging.collapse_floor, judging.collapse_patience)
        trials.append(trial)
    return trials


def _csv_text(trials: list[TrialRecord]) -> str:
    param_keys, summary = sorted({k for t in trials for k in t.params}), metrics.summary_names()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial_id", "status", "epochs", *summary, *param_keys])
    for t in trials:
        last = t.last
        writer.writerow([t.trial_id, t.status, last.get("epoch", 0), *(last.get(k, "") for k in summary),
                         *(t.params.get(k, "") for k in param_keys)])
    return out.getvalue()


def export_best(exp_dir: str | Path, metric: str = "score", mode: str | None = None,
                reduce: str = "last") -> TrialRecord | None:
    """Write best_config.yaml, best_trial.json and trials.csv; returns the best trial (or None).

    Trials are ranked by `metric` at their last report (reduce="last", the search's objective)
    or by its best value over the run (reduce="best"); mode defaults to the experiment's goal
    (max for health, min for a collapse search)."""
    exp_dir = Path(exp_dir)
    judging = read_judging(exp_dir)
    mode = mode or judging.mode
    trials = read_trials(exp_dir)
    atomic_write_text(exp_dir / "trials.csv", _csv_text(trials))
    order = ranked(trials, mode, metric, reduce)
    if not order:
        return None
    best = order[0]
    # the final race's winner (race.json, search/race.py) is the search's answer under its own objective
    race = read_json(exp_dir / RACE_OUTCOME_FILE) if (metric, reduce) == ("score", "last") else {}
    if race.get("winner"):
        best = next(t for t in order if t.trial_id == race["winner"])
        race = {k: race[k] for k in ("summary", "winner_failures", "seeds", "epochs", "ranking", "trial_epochs",
                                     "trial_epochs_without_stopping")} | {"winner": race["finalists"][race["winner"]]}
    else:
        race = {}

    config = yaml.safe_load((best.path / "run" / "config.yaml").read_text())
    config["name"] = f"{exp_dir.name}-best"
    how = f"by {reduce} {metric} ({mode})"
    if race:  # the production budget it was raced at
        (config if "trainer" in config else config["training"])["epochs"] = race["epochs"]
        how = (f"winner of the final race among the top {len(race['ranking'])} ({race['summary']}; "
               "race.json)")
    atomic_write_text(exp_dir / "best_config.yaml",  # a JEPA config, or a contract run file naming its trainer
                      f"# best trial {best.trial_id} of {exp_dir} {how}; "
                      f"run it with: python scripts/train.py {exp_dir / 'best_config.yaml'}\n"
                      + yaml.safe_dump(config, sort_keys=False))
    judgement = judge(read_jsonl(best.path / "run" / "metrics.jsonl"), planned_epochs(best), judging.targets)
    atomic_write_json(exp_dir / "best_trial.json", {
        "trial_id": best.trial_id,
        "metric": metric, "mode": mode, "reduce": reduce, "value": best.value(metric, mode, reduce),
        "status": best.status,
        "epochs": best.last.get("epoch", 0),
        "params": best.params,
        "final": {k: best.last.get(k) for k in metrics.summary_names() if k in best.last},
        "targets": judging.targets.as_dict(),
        "seed_targets": SEED.as_dict(),
        **judgement.as_dict(),
        "trial_dir": str(best.path),
        **({"final_race": race} if race else {}),
    })
    return best


def planned_epochs(trial: TrialRecord) -> int:
    """The epochs the trial was given, from its run/config.yaml (a JEPA config's training.epochs,
    or a contract run file's epochs), 0 if unknown."""
    path = trial.path / "run" / "config.yaml"
    if not path.is_file():
        return 0
    config = yaml.safe_load(path.read_text())
    return config["epochs"] if "trainer" in config else config["training"]["epochs"]
