"""scripts/study.py's stages on a tiny budget (real trainer, real ARC subset), into temp folders."""

import json
import math

import pytest
import yaml
from scipy.stats import spearmanr

from search import study
from search.score import composite_score
from search.study_doc import write_study_doc
from search.targets import CALIBRATION_RATIO, calibrated

pytestmark = pytest.mark.slow
TINY = ("data.max_tasks=60", "training.batch_size=32", "vq.refresh_interval=4")


def test_confirm_calibrate_rankcorr_and_the_document(tmp_path):
    docs, runs, targets_file = tmp_path / "docs", tmp_path / "runs", tmp_path / "calibrated_targets.yaml"
    confirm = study.stage_confirm(workers=2, epochs=2, seeds=(0, 1), configs=("sixth_run", "diagnostic_no_vq"),
                                  overrides=TINY, docs=docs, runs=runs)
    assert [r["name"] for r in confirm["runs"]] == ["sixth_run-seed0", "sixth_run-seed1",
                                                    "diagnostic_no_vq-seed0", "diagnostic_no_vq-seed1"]
    assert all(r["epochs"] == 2 and r["status"] == "completed" for r in confirm["runs"])
    stored = json.loads((docs / "confirm.json").read_text())
    assert (docs / "confirm.png").is_file() and [r["name"] for r in stored["runs"]] == [r["name"] for r in confirm["runs"]]
    assert all(r["first_refresh_epoch"] in (1, 2) for r in confirm["runs"][:2])  # refresh every 4 steps
    sixth = confirm["runs"][0]
    rows = [json.loads(x) for x in (runs / "confirm" / "sixth_run-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert sixth["min"]["codebook/usage"] == min(r["codebook/usage"] for r in rows)
    assert 0 <= sixth["final"]["codes/nmi_colour"] <= 1 and math.isnan(confirm["runs"][2]["final"]["codes/nmi_colour"])

    cal = study.stage_calibrate(docs=docs, runs=runs, target_file=targets_file, seeds=(0, 1))
    no_vq = [json.loads(x) for s in (0, 1) for x in
             (runs / "confirm" / f"diagnostic_no_vq-seed{s}" / "metrics.jsonl").read_text().splitlines()]
    expected = round(CALIBRATION_RATIO * min(r["rank/context"] for r in no_vq), 2)
    assert cal["calibrated"]["context_rank"] == expected
    assert calibrated(targets_file).context_rank == expected  # what the spaces will read
    assert yaml.safe_load(targets_file.read_text())["seed_literal"] == {"usage": 0.15, "context_rank": 10.0,
                                                                      "target_rank": 20.0}

    corr = study.stage_rankcorr(workers=2, n=3, epochs=1, seeds=(0, 1), overrides=TINY, docs=docs, runs=runs)
    assert len(corr["table"]) == 3
    seed_scores = {s: [] for s in (0, 1)}
    for i in range(3):
        for s in (0, 1):
            last = json.loads((runs / "rankcorr" / f"cfg{i:02d}-seed{s}" / "metrics.jsonl").read_text()
                              .splitlines()[-1])
            seed_scores[s].append(composite_score(last["codebook/usage"], last["rank/context"],
                                                  last["rank/target"], last["val/loss"]))
    rho = spearmanr(seed_scores[0], seed_scores[1])[0]
    got = corr["correlation"]["seed"]["spearman"]
    assert (math.isnan(rho) and math.isnan(got)) or got == pytest.approx(rho)
    met = [[x > 1 for x in seed_scores[s]] for s in (0, 1)]
    assert corr["correlation"]["seed"]["verdict_agrees"] == sum(x == y for x, y in zip(*met))
    assert corr["correlation"]["seed"]["met_both"] == sum(x and y for x, y in zip(*met))

    out = write_study_doc(docs, tmp_path / "study.md")
    text = out.read_text()
    assert "`sixth_run` shows the seed's signature in" in text and "Spearman" in text
    assert "Not run yet: `python scripts/study.py collapse`" in text  # a stage without a summary says so
