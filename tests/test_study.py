"""The study package's stages on a tiny budget (real trainer, real ARC subset), into temp folders, and
its pure summaries on hand-built trials."""

import json
import math

import pytest
import yaml
from scipy.stats import spearmanr

from search.score import items_passed, run_score
from search.targets import CALIBRATION_RATIO, calibrated
from study import collapse, fix, protocol
from study.doc import write_study_doc
TINY = ("data.max_tasks=60", "training.batch_size=32", "vq.refresh_interval=4")


@pytest.mark.slow
def test_confirm_calibrate_rankcorr_and_the_document(tmp_path):
    docs, runs, targets_file = tmp_path / "docs", tmp_path / "runs", tmp_path / "calibrated_targets.yaml"
    confirm = collapse.stage_confirm(workers=2, epochs=2, seeds=(0, 1), configs=("sixth_run", "diagnostic_no_vq"),
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

    cal = collapse.stage_calibrate(docs=docs, runs=runs, target_file=targets_file, seeds=(0, 1))
    no_vq = [json.loads(x) for s in (0, 1) for x in
             (runs / "confirm" / f"diagnostic_no_vq-seed{s}" / "metrics.jsonl").read_text().splitlines()]
    expected = round(CALIBRATION_RATIO * min(r["rank/context"] for r in no_vq), 2)
    assert cal["calibrated"]["context_rank"] == expected
    assert calibrated(targets_file).context_rank == expected  # what the spaces will read
    assert yaml.safe_load(targets_file.read_text())["seed_literal"] == {"usage": 0.15, "context_rank": 10.0,
                                                                      "target_rank": 20.0, "final_val_loss": 8.0}
    finals = [json.loads((runs / "confirm" / f"diagnostic_no_vq-seed{s}" / "metrics.jsonl").read_text()
                         .splitlines()[-1])["val/loss_reference"] for s in (0, 1)]
    assert calibrated(targets_file).final_val_loss == round(max(finals) * 8 / 7.75, 2)

    corr = collapse.stage_rankcorr(workers=2, n=3, epochs=1, seeds=(0, 1), overrides=TINY, docs=docs, runs=runs)
    assert len(corr["table"]) == 3
    seed_scores = {s: [] for s in (0, 1)}
    for i in range(3):
        for s in (0, 1):
            rows = [json.loads(x) for x in (runs / "rankcorr" / f"cfg{i:02d}-seed{s}" / "metrics.jsonl")
                    .read_text().splitlines()]
            seed_scores[s].append(run_score(rows, 1))  # the search's score with the seed's targets
    rho = spearmanr(seed_scores[0], seed_scores[1])[0]
    got = corr["correlation"]["seed"]["spearman"]
    assert (math.isnan(rho) and math.isnan(got)) or got == pytest.approx(rho)
    passed = [[items_passed(x) for x in seed_scores[s]] for s in (0, 1)]
    assert corr["correlation"]["seed"]["passed_agrees"] == sum(x == y for x, y in zip(*passed))
    assert set(corr["tiebreak_spearman"]) == {"health margin", "val loss"}

    # production: a config written from an experiment's winner, trained with fresh seeds, judged item by item
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "best_config.yaml").write_text((protocol.ROOT / "configs" / "sixth_run.yaml").read_text())
    (exp / "best_trial.json").write_text(json.dumps({"trial_id": "abc"}))
    production = tmp_path / "stable_production.yaml"
    fix.write_production_config(exp, production)
    cfg = yaml.safe_load(production.read_text())
    assert cfg["name"] == "stable_production" and cfg["training"]["epochs"] == protocol.PRODUCTION_EPOCHS
    assert "trial abc" in production.read_text() and cfg["vq"] == yaml.safe_load(
        (protocol.ROOT / "configs" / "sixth_run.yaml").read_text())["vq"]
    prod = fix.stage_production(workers=2, seeds=(7, 8), config=production, epochs=2, overrides=TINY,
                                  docs=docs, runs=runs)
    assert [r["name"] for r in prod["runs"]] == ["stable_production-seed7", "stable_production-seed8"]
    assert all(r["epochs"] == 2 for r in prod["runs"])
    rates = prod["pass_rates"]["calibrated"]
    assert rates["completed_all_epochs"] == 2  # judged against the 2 epochs it was asked to run
    assert all(0 <= c <= 2 for c in rates.values()) and (docs / "production.png").is_file()

    variants = (("sixth_run (mean)", "sixth_run", ()), ("k-means init", "sixth_run", ("vq.init=kmeans",)),
                ("context last", "context_last", ()))
    fixes = fix.stage_fixes(workers=2, epochs=1, seeds=(0,), variants=variants, overrides=TINY, docs=docs, runs=runs)
    assert [v["name"] for v in fixes["variants"]] == [v[0] for v in variants]
    kmeans = yaml.safe_load((runs / "fixes" / "k-means_init-seed0" / "config.yaml").read_text())
    assert kmeans["vq"]["init"] == "kmeans"  # the variant's override reached the run
    for v in fixes["variants"]:
        assert v["runs"] == 1 and set(v["pass_counts"].values()) <= {0, 1}

    out = write_study_doc(docs, tmp_path / "study.md")
    text = out.read_text()
    assert "**Answer (order-aware context against mean pooling).** context last: val loss" in text
    assert "`sixth_run` shows the seed's signature in" in text and "Spearman" in text
    assert f"## 7. The production config over {protocol.PRODUCTION_EPOCHS} epochs" in text and "over 2 epochs" in text
    assert "Not run yet: `python scripts/study.py main`" in text
    assert "Not run yet: `python scripts/study.py collapse`" in text  # a stage without a summary says so


def test_search_trials_grouped_by_a_parameter():
    """fix._groups: per value, the best by score (trials come best first) and the lowest final
    val loss among the full-budget trials, with the items each fails."""
    def trial(tid, kind, score, epochs, val, failed=()):
        items = {"a": {"pass": "a" not in failed, "label": "item a"}, "b": {"pass": "b" not in failed, "label": "item b"}}
        return {"trial_id": tid, "params": {"vq.kind": kind} if kind else {}, "score": score, "epochs": epochs,
                "val/loss": val, "rank/context": 10.0, "items": items}

    trials = [trial("t1", "ema", 8.5, 24, 13.0), trial("t2", "ema", 7.4, 24, 12.0, ("b",)),
              trial("t3", "fsq", 4.0, 9, 18.0, ("a", "b")), trial("t4", None, 3.0, 24, 14.0, ("a",))]
    groups = fix._groups(trials, "vq.kind", planned=24)
    assert list(groups) == ["ema", "fsq", "(base)"]  # values in order, the base config (param off) last
    assert groups["ema"]["trials"] == 2 and groups["ema"]["full_budget"] == 2
    assert groups["ema"]["best"]["trial_id"] == "t1" and groups["ema"]["best"]["failed"] == []
    assert groups["ema"]["lowest_val_loss"]["trial_id"] == "t2"
    assert groups["ema"]["lowest_val_loss"]["failed"] == ["item b"]
    assert groups["fsq"]["lowest_val_loss"] is None and groups["fsq"]["best"]["failed"] == ["item a", "item b"]
    assert groups["(base)"]["best"]["trial_id"] == "t4"


def test_the_loss_yardstick_table_and_the_runs_it_covers():
    """fix.loss_yardstick: the full-budget trials' own and reference val losses, lowest relational
    weight first (the base config's weight where the trial did not set it); empty when the space
    does not search the weights. And docs/study.md's claim that sections 8 and 9 need no yardstick:
    every fix variant, and the bases of the quantizer and context spaces, train with REFERENCE_WEIGHTS."""
    from model.config import load_config
    from model.jepa import REFERENCE_WEIGHTS
    from model.train import loss_weights

    def trial(tid, weight, own, ref, passed):
        params = {"relational_loss.weight": weight} if weight is not None else {}
        return {"trial_id": tid, "params": params, "val/loss": own, "val/loss_reference": ref,
                "items": {"final_val_loss": {"pass": passed}, "grad_norm_mean": {"pass": True},
                          "grad_norm_max": {"pass": weight is not None}}}

    space = {"params": {"relational_loss.weight": {}, "vq.ema_decay": {}}}
    rows = fix.loss_yardstick([trial("a", 0.02, 9.0, 15.0, False), trial("b", None, 13.0, 13.0, True),
                                 trial("c", 0.01, 8.0, 14.0, True)], space)
    assert [r["trial_id"] for r in rows] == ["c", "a", "b"]
    assert rows[2]["relational_loss.weight"] == REFERENCE_WEIGHTS.relational
    assert rows[2]["relational_loss.context_self_weight"] == REFERENCE_WEIGHTS.context_self
    assert (rows[1]["val/loss"], rows[1]["val/loss_reference"], rows[1]["final_val_loss_pass"]) == (9.0, 15.0, False)
    assert rows[1]["grad_items_pass"] and not rows[2]["grad_items_pass"]  # both gradient items, or FAIL
    assert fix.loss_yardstick([trial("a", 0.02, 9.0, 15.0, False)], {"params": {"vq.ema_decay": {}}}) == []

    for _, config, overrides in protocol.FIXES:
        assert loss_weights(load_config(protocol.ROOT / "configs" / f"{config}.yaml", list(overrides))) == REFERENCE_WEIGHTS
    for name in ("quantizer", "context"):
        space = yaml.safe_load((protocol.ROOT / "spaces" / f"{name}.yaml").read_text())
        assert not any(k.startswith(("relational_loss.", "loss.sigreg")) for k in space["params"])
        base = (protocol.ROOT / "spaces" / space["base"]).resolve()
        assert loss_weights(load_config(base)) == REFERENCE_WEIGHTS


@pytest.mark.slow
def test_the_reference_stage_judges_the_no_vq_run_like_the_winner(tmp_path):
    """stage_reference: diagnostic_no_vq with the given seeds and budget (real trainer, tiny data),
    each item judged by the checklist on the run; the document's table says what it fails."""
    from study.doc import reference_table

    docs, runs = tmp_path / "docs", tmp_path / "runs"
    ref = fix.stage_reference(workers=2, seeds=(1000, 1001), epochs=(2,), overrides=TINY, docs=docs, runs=runs)
    budget = ref["budgets"]["2"]
    assert [r["seed"] for r in budget["runs"]] == [1000, 1001]
    assert all(r["status"] == "completed" and r["epochs"] == 2 for r in budget["runs"])
    rows = [json.loads(x) for x in (runs / "reference" / fix.reference_run_name(2, 1000, fix.main_schedule()) / "metrics.jsonl")
            .read_text().splitlines()]
    assert math.isnan(rows[-1]["codebook/usage"])  # no quantizer: usage is undefined, and its item left out
    # the main space's learning-rate schedule, as the winner trains with it (a cosine ends at its final lr)
    assert ref["schedule"] == fix.main_schedule() and ref["schedule"]["training.lr_schedule"] == "cosine"
    assert rows[-1]["train/lr"] == pytest.approx(1e-3 * ref["schedule"].get("training.final_lr_fraction", 0.01))
    assert "usage_throughout" not in budget["pass_counts"] and "target_rank" in budget["pass_counts"]
    assert budget["pass_counts"]["completed_all_epochs"] == 2
    assert budget["pass_counts"] == {k: sum(r["items"][k]["pass"] for r in budget["runs"]) for k in budget["pass_counts"]}
    assert json.loads((docs / "reference.json").read_text())["budgets"]["2"]["pass_counts"] == budget["pass_counts"]
    text = "\n".join(reference_table(ref, 2))
    assert "no-VQ seed 1000 (completed, 2 ep)" in text and "usage > 15%" not in text
    assert "Not run yet" in "\n".join(reference_table(ref, 80))


@pytest.mark.slow
def test_the_unquantized_stage_is_the_production_config_without_its_codebook(tmp_path):
    """stage_unquantized: configs/stable_production.yaml with vq.enabled=false (real trainer, tiny
    data), everything else the production config's; judged like the reference, its table in the doc."""
    from study.doc import unquantized_table

    docs, runs = tmp_path / "docs", tmp_path / "runs"
    unq = fix.stage_unquantized(workers=1, seeds=(1000,), epochs=(2,), overrides=TINY, docs=docs, runs=runs)
    run_dir = runs / "unquantized" / fix.unquantized_run_name(2, 1000)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    production = yaml.safe_load(protocol.PRODUCTION_CONFIG.read_text())
    assert resolved["vq"]["enabled"] is False and production["vq"]["enabled"] is True
    for section in ("model", "relational_loss", "loss"):  # every key the production config sets (a newer default may add keys)
        assert {k: resolved[section][k] for k in production[section]} == production[section]
    assert resolved["training"]["lr_schedule"] == production["training"]["lr_schedule"]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and math.isnan(rows[-1]["codebook/usage"])
    budget = unq["budgets"]["2"]
    assert [r["seed"] for r in budget["runs"]] == [1000] and "usage_throughout" not in budget["pass_counts"]
    assert json.loads((docs / "unquantized.json").read_text()) == json.loads(json.dumps(unq))
    text = "\n".join(unquantized_table(unq, 2))
    assert "`vq.enabled=false`" in text and "unquantized seed 1000 (completed, 2 ep)" in text
    assert "Not run yet: `python scripts/study.py unquantized`" in "\n".join(unquantized_table(None, 2))


@pytest.mark.slow
def test_the_ladder_picks_the_rung_closest_to_the_seed_and_calibrates_there(tmp_path):
    """stage_ladder on two tiny rungs (real trainer, tiny data): every rung with the first seed, the
    closest rung with every seed; the closeness is the formula's, the targets the existing rule's."""
    from search.targets import SEED_NO_VQ, calibrate_from
    from study import ladder
    from study.doc import section_ladder

    docs, runs = tmp_path / "docs", tmp_path / "runs"
    out = ladder.stage_ladder(workers=2, epochs=2, dims=(16, 32), data=("arc1",), seeds=(0, 1), docs=docs, runs=runs,
                              overrides=TINY)
    assert [(e["dim"], e["data"]) for e in out["rungs"]] == [(16, "arc1"), (32, "arc1")]
    first = [e["seeds"]["0"]["no_vq"] for e in out["rungs"]]
    expected = [sum(abs(math.log(a / b)) for a, b in zip(
        (f["context_first"], f["context_end"], f["target_first"], f["target_end"]),
        (*SEED_NO_VQ["context_rank"], *SEED_NO_VQ["target_rank"]))) / 4 for f in first]
    assert [e["closeness"] for e in out["rungs"]] == pytest.approx(expected)
    chosen = out["rungs"][expected.index(min(expected))]
    assert (out["chosen"]["dim"], out["chosen"]["data"]) == (chosen["dim"], chosen["data"])
    assert set(chosen["seeds"]) == {"0", "1"}  # every seed at the chosen rung ...
    other = out["rungs"][1 - expected.index(min(expected))]
    assert set(other["seeds"]) == {"0"}  # ... the first elsewhere
    rows = [[json.loads(x) for x in (runs / "ladder" / ladder.run_name("diagnostic_no_vq", chosen["dim"], "arc1", s)
                                     / "metrics.jsonl").read_text().splitlines()] for s in (0, 1)]
    targets = calibrate_from([r["rank/context"] for rs in rows for r in rs], [r["rank/target"] for rs in rows for r in rs],
                             [rs[-1]["val/loss_reference"] for rs in rows])
    assert out["at_chosen"]["calibrated"] == targets.as_dict()
    config = yaml.safe_load((runs / "ladder" / ladder.run_name("sixth_run", 32, "arc1", 0) / "config.yaml").read_text())
    assert (config["model"]["dim"], config["model"]["heads"], config["model"]["predictor_hidden"]) == (32, 2, 64)
    text = "\n".join(section_ladder(out))
    assert f"dim {chosen['dim']}, data arc1" in text and "![ladder](study/ladder.png)" in text
    assert (docs / "ladder.png").is_file()


def test_the_rung_space_is_the_collapse_space_at_that_rung(tmp_path):
    """study.ladder.rung_space: spaces/collapse.yaml with the rung's width fixed (no longer a
    parameter), its heads, predictor width and data set, the rung budget; it loads as a space."""
    from search.space import load_space
    from study import ladder

    path = ladder.rung_space({"dim": 128, "data": "arc12x2"}, tmp_path / "rung.yaml")
    loaded = load_space(path)
    assert "model.dim" not in loaded.space.params and len(loaded.space.params) > 5
    assert loaded.base["model"]["dim"] == 128 and loaded.base["model"]["heads"] == 8
    assert loaded.base["model"]["predictor_hidden"] == 256
    assert loaded.base["data"]["sources"] == ["arc1", "arc2"] and loaded.base["data"]["augment_copies"] == 2
    assert loaded.space.budget.num_samples == protocol.RUNG_BUDGET["num_samples"]
    assert loaded.space.objective.goal == "collapse"


def _distance_entry(overrides: list[str], failed_per_seed: list[list[str]]) -> dict:
    final = {"val/loss_reference": 9.0, "rank/context": 40.0, "rank/target": 20.0, "codebook/usage": 0.8}
    return {"overrides": overrides, "pass_counts": {}, "seeds": {
        str(1000 + i): {"status": "early_stopped" if failed else "completed", "epochs": 70 if failed else 80,
                        "best_val_loss_epoch": 60, "final": final, "failed": failed, "epoch_s": 2.0}
        for i, failed in enumerate(failed_per_seed)}}


def test_the_distance_chooses_the_smallest_change_that_passes_everywhere():
    """study.ladder.choose_variant: only variants passing every item in every seed qualify, the one
    with the fewest overrides wins (first listed among equals); none qualifies -> None. The doc
    says which was chosen and shows its held-out runs, or says none was."""
    from study.doc import section_distance
    from study.ladder import choose_variant

    stop = ["ran all 80 epochs"]
    variants = {"production": _distance_entry([], [[], stop, []]),
                "two": _distance_entry(["a=1", "b=2"], [[], [], []]),
                "lr": _distance_entry(["training.lr=3e-4"], [[], [], []]),
                "lr2": _distance_entry(["training.lr=2e-4"], [[], [], []]),
                "empty": _distance_entry(["x=1"], [])}
    assert choose_variant(variants) == "lr"
    assert choose_variant({"production": variants["production"], "empty": variants["empty"]}) is None
    assert choose_variant({"production": _distance_entry([], [[], []]), "lr": variants["lr"]}) == "production"

    s = {"command": "python scripts/study.py distance", "config": "configs/stable_production.yaml", "epochs": 80,
         "seeds": [1000, 1001, 1002], "variants": variants, "chosen": "lr",
         "held_out": {"seeds": [1003], "variants": {"production": _distance_entry([], [stop]),
                                                    "lr": _distance_entry(["training.lr=3e-4"], [[]])}}}
    text = "\n".join(section_distance(s))
    assert "**production**: ran all 80 epochs in 2 of 3 seeds; passed every item in 2 of 3." in text
    assert "The variant chosen (every item in every seed, the fewest overrides): **lr**" in text
    assert "[1003]" in text and "**lr**: ran all 80 epochs in 1 of 1 seeds; passed every item in 1 of 1." in text
    assert ("**Answer.** Over every seed it ran here, production ran all 80 epochs in 2 of 4 and passed every item "
            "in 2 of 4; lr ran all 80 epochs in 4 of 4 and passed every item in 4 of 4.") in text
    text = "\n".join(section_distance({**s, "chosen": None, "held_out": {"seeds": [1003], "variants": {}}}))
    assert "No variant passed every item in every seed" in text


@pytest.mark.slow
def test_the_distance_stage_runs_the_chosen_variant_on_held_out_seeds(tmp_path):
    """stage_distance on a tiny budget (real trainer): every variant on the selection seeds; the
    chosen one (if any) and the production config on the held-out seeds, nothing else there; the
    summary written is the one returned, and a second call reruns nothing."""
    from study import ladder

    docs, runs = tmp_path / "docs", tmp_path / "runs"
    variants = {"production": [], "lr": ["training.lr=3.0e-4"]}
    out = ladder.stage_distance(workers=2, seeds=(0,), held_out=(1,), variants=variants, docs=docs, runs=runs,
                                epochs=2, overrides=TINY)
    assert set(out["variants"]) == set(variants) and all(set(v["seeds"]) == {"0"} for v in out["variants"].values())
    assert out["chosen"] == ladder.choose_variant(out["variants"])
    ran = sorted(p.name for p in (runs / "distance").iterdir())
    expected = {f"{n}-seed0" for n in variants} | ({f"{n}-seed1" for n in {"production", out["chosen"]}}
                                                  if out["chosen"] else set())
    assert set(ran) == expected
    assert json.loads((docs / "distance.json").read_text()) == json.loads(json.dumps(out))
    config = yaml.safe_load((runs / "distance" / "lr-seed0" / "config.yaml").read_text())
    assert config["training"]["lr"] == 3.0e-4 and config["training"]["epochs"] == 2 and config["seed"] == 0
    stamp = (runs / "distance" / "lr-seed0" / "status.json").stat().st_mtime_ns
    ladder.stage_distance(workers=2, seeds=(0,), held_out=(1,), variants=variants, docs=docs, runs=runs, epochs=2,
                          overrides=TINY)
    assert (runs / "distance" / "lr-seed0" / "status.json").stat().st_mtime_ns == stamp


def test_colour_share_and_refresh_bookkeeping_on_hand_computed_values():
    """study/start.py: colour_r2 is one-way ANOVA's R^2; refreshes reads usage around each refresh."""
    import torch

    from study.start import colour_r2, refreshes

    # two colours, 1-D tokens: colour 0 at 0 and 2 (mean 1), colour 1 at 10 and 12 (mean 11); grand mean 6
    # total SS = (0-6)^2 + (2-6)^2 + (10-6)^2 + (12-6)^2 = 36 + 16 + 16 + 36 = 104; within SS = 4 x 1 = 4
    tokens = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    assert colour_r2(tokens, torch.tensor([0, 0, 1, 1])) == pytest.approx(1 - 4 / 104)
    rows = [{"epoch": e, "codebook/usage": u, "codebook/refreshed": r}
            for e, u, r in [(1, 0.04, 0), (2, 0.5, 100), (3, 0.3, 0), (4, 0.2, 0), (5, 0.6, 90), (6, 0.4, 0)]]
    assert refreshes(rows) == [
        {"epoch": 2, "refreshed": 100, "usage_before": 0.04, "usage_at": 0.5, "usage_next_epoch": 0.3,
         "usage_before_next": 0.2, "until_epoch": 4},
        {"epoch": 5, "refreshed": 90, "usage_before": 0.2, "usage_at": 0.6, "usage_next_epoch": 0.4,
         "usage_before_next": 0.4, "until_epoch": 6}]


@pytest.mark.slow
def test_the_start_stage_finds_the_codebook_copied_from_the_colour_embeddings(tmp_path):
    """study/start.py on a tiny budget: the anatomy shows the old shared stream's codebook holding
    the colour embeddings (cosine 1, one code per colour) and the own stream's not; every run of
    START_RUNS trains; the document renders its section."""
    from study.doc import section_start
    from study.start import stage_start

    docs, runs = tmp_path / "docs", tmp_path / "runs"
    summary = stage_start(workers=2, seeds=(0,), epochs=2, overrides=TINY, docs=docs, runs=runs)
    sixth = [a for a in summary["anatomy"] if a["config"] == "sixth_run"]
    assert len(sixth) == 1 and sixth[0]["max_cos_colour_shared_stream"] == pytest.approx(1.0, abs=1e-5)
    assert sixth[0]["codes_at_init_shared_stream"] == sixth[0]["colours"]
    assert sixth[0]["max_cos_colour_own_stream"] < 0.9 and sixth[0]["codes_at_init_own_stream"] > sixth[0]["colours"]
    gpt = [a for a in summary["anatomy"] if a["config"] == "sixth_run_gpt_init"]
    assert gpt and gpt[0]["colour_r2"] < sixth[0]["colour_r2"] and gpt[0]["colour_embedding_norm"] < 1
    assert [r["name"] for r in summary["runs"]] == ["sixth_run-seed0", "sixth_run_gpt_init-seed0", "no-VQ_gpt_init-seed0"]
    assert all(r["epochs"] == 2 for r in summary["runs"])
    assert summary["runs"][0]["refreshes"], "refresh_interval=4: a refresh within the first epochs"
    assert not summary["runs"][2]["refreshes"], "no codebook, no refresh"
    text = "\n".join(section_start(json.loads((docs / "start.json").read_text())))
    assert "**Why 10 codes.**" in text and "![start](study/start.png)" in text and (docs / "start.png").is_file()


def test_the_start_grid_section_says_where_the_seeds_start_lies():
    """study/doc.py: section 17 from a hand-built grid: which cells start at 20-30% usage, which
    context rank is nearest the seed's 6.4, whether any cell has both, and the chosen config's cell
    (configs/sixth_run_kmeans_start.yaml: kmeans, colour std 0.8)."""
    from study.doc import section_start_grid

    def cell(init, std, usage, rank):
        return [{"init": init, "colour_init_std": std, "seed": s, "codebook/usage": usage, "rank/context": rank,
                 "rank/target": 17.0} for s in (0, 1)]

    grid = cell("random", None, 0.04, 7.0) + cell("kmeans", 0.3, 0.09, 6.3) + cell("kmeans", 0.8, 0.27, 12.6)
    summary = {"command": "python scripts/study.py startgrid", "epochs": 80, "seeds": [0, 1], "grid": grid, "runs": []}
    text = "\n".join(section_start_grid(summary))
    assert "| kmeans | 0.8 | 27.0% (27%) | 12.6 (12.6) | 17 |" in text
    assert "Usage in the seed's 20-30% after one epoch: kmeans init with colour std 0.8;" in text
    assert "the context rank nearest the seed's 6.4 is kmeans init with colour std 0.3 (6.3, usage 9.0%)" in text
    assert "No cell has both the seed's usage and a context rank within 1.5 of its 6.4." in text
    # |0.09/0.24 - 1| + |6.3/6.4 - 1| = 0.64 against 0.85 (random) and 1.09 (kmeans 0.8)
    assert "of the means): kmeans init with colour std 0.3 (usage 9.0%, context rank 6.3)." in text
    assert "is the cell with kmeans init and colour std 0.3 (usage 9.0%, context rank 6.3 after one epoch)" in text
    summary["grid"] = grid + cell("kmeans", 0.5, 0.25, 7.5)  # now one cell has both
    text = "\n".join(section_start_grid(summary))
    assert "Both the seed's usage and a context rank within 1.5 of its 6.4: kmeans init with colour std 0.5." in text


def test_the_rung_runs_take_the_cell_nearest_the_seeds_start_and_the_one_nearest_its_usage():
    """study/start.py: seed_start_distance on hand values; at the rung, the cell nearest in usage and
    rank together runs both START_RUNG_RUNS, the cell nearest in usage alone (if another) the quantized one."""
    from study.protocol import START_RUNG_RUNS
    from study.start import grid_cells, nearest_seed_start, nearest_seed_usage, rung_runs, seed_start_distance

    assert seed_start_distance(0.24, 6.4) == 0
    assert seed_start_distance(0.12, 9.6) == pytest.approx(0.5 + 0.5)

    def cell(std, usage, rank):
        return [{"init": "kmeans", "colour_init_std": std, "seed": s, "codebook/usage": usage, "rank/context": rank,
                 "rank/target": 20.0} for s in (0, 1)]

    # std 0.3: |0.047/0.24 - 1| + |5.7/6.4 - 1| = 0.80 + 0.11 = 0.91; std 2.0: 0.33 + 1.03 = 1.36
    grid = cell(0.3, 0.047, 5.7) + cell(None, 0.12, 10.3) + cell(2.0, 0.32, 13.0)
    cells = grid_cells(grid)
    assert nearest_seed_start(cells) == ("kmeans", 0.3) and nearest_seed_usage(cells) == ("kmeans", 2.0)
    runs = rung_runs(grid)
    assert [(name, config, extra) for name, config, extra in runs] == [
        (f"{START_RUNG_RUNS[0][0]}, colour std 0.3", START_RUNG_RUNS[0][1], ("model.colour_init_std=0.3",)),
        (f"{START_RUNG_RUNS[1][0]}, colour std 0.3", START_RUNG_RUNS[1][1], ("model.colour_init_std=0.3",)),
        (f"{START_RUNG_RUNS[0][0]}, colour std 2", START_RUNG_RUNS[0][1], ("model.colour_init_std=2.0",))]
    assert len(rung_runs(cell(None, 0.24, 6.4) + cell(0.3, 0.01, 2.0))) == 2  # one cell nearest in both senses


def _run(name, usage, ranks, refreshed=()):
    """A start-stage run entry (study/start.py: _start_runs) from per-epoch usage and context rank."""
    from search.runs import TrainRun
    from study.common import run_summary
    from study.signature import usage_decay
    from study.start import refreshes

    rows = [{"epoch": e + 1, "codebook/usage": u, "rank/context": r, "rank/target": 20.0, "val/loss": 5.0,
             "codebook/refreshed": 50 if e + 1 in refreshed else 0} for e, (u, r) in enumerate(zip(usage, ranks))]
    entry = run_summary(name, name, TrainRun(name, rows=rows, status="completed"), len(rows))
    entry.update({"refreshes": refreshes(rows), "first": {k: rows[0][k] for k in ("codebook/usage", "rank/context",
                                                                                   "rank/target", "val/loss")},
                  "decay": usage_decay(rows)})
    return entry


def test_the_signature_trials_section_says_where_the_signature_starts_and_which_switch_removes_it():
    """study/doc.py: a trial that starts collapsed shows the signature at epoch 1 without decaying;
    the switch sentence names exactly the values whose putting back removes it in every seed."""
    from study.doc import section_signature_trials

    collapsed = [_run(f"sig-t-seed{s}", [0.04, 0.05, 0.7, 0.8], [2.0, 2.5, 4.0, 5.0], refreshed=(3,)) for s in (0, 1)]
    healthy = [_run(f"sig-t-lr-seed{s}", [0.3, 0.4, 0.8, 0.8], [6.0, 6.5, 7.0, 7.0]) for s in (0, 1)]
    mixed = [collapsed[0], healthy[1]]
    summary = {"signature_trials": [{"trial_id": "t", "params": {"training.lr": 0.0066, "vq.refresh_interval": 265},
                                     "seeds": [0, 1], "epochs": 4, "runs": collapsed, "switches": [
        {"param": "training.lr", "trial_value": 0.0066, "base_value": 0.001, "epochs": 4, "runs": healthy},
        {"param": "vq.refresh_interval", "trial_value": 265, "base_value": 500, "epochs": 4, "runs": mixed}]}]}
    text = "\n".join(section_signature_trials(summary))
    assert "The signature appears in 2 of 2 seeds, at the first epoch in 2; usage decays from a healthy level " \
           "(usage_decay) in 0 of 2." in text
    assert "(every 265 steps, the trial's)" in text
    assert "| `training.lr` | 0.0066 | 0.001 | 0/2 | 0/2 | 30% | 6 | 6 | 80% |" in text
    assert "| `vq.refresh_interval` | 265 | 500 | 1/2 |" in text
    assert "**The switch.** Putting back any one of `training.lr` removes the signature in every seed." in text
    summary["signature_trials"][0]["switches"].pop(0)
    assert "No single value put back removes the signature in every seed." in "\n".join(section_signature_trials(summary))
    assert section_signature_trials({"trials": []}) == [] and section_signature_trials(None) == []


def test_the_vqvae_answer_leaves_the_first_epochs_out_of_the_lowest_usage():
    """study/doc.py: "every epoch after the first few" is read from epoch 4 on (VQVAE_SETTLE_EPOCHS = 3)."""
    from study.doc import _after_first_epochs

    s = {"default": {"seeds": {"1000": {"usage": [0.9, 0.1, 0.1, 0.05, 0.02]}}},
         "winner": {"seeds": {"1000": {"usage": [0.1, 0.5, 0.7, 0.85, 0.9]}, "1001": {"usage": [0.2, 0.9, 0.9, 0.79, 0.95]}}}}
    assert _after_first_epochs(s) == ("After the first 3 epochs, the lowest usage per seed: the default's 2% (0 of 1 "
                                      "seeds at >= 80% every epoch); the winner's 79%-85% (1 of 2 seeds at >= 80% "
                                      "every epoch).")


def test_what_part_4_means_counts_decays_signatures_and_refreshes_from_the_summaries():
    """study/doc.py: section_part4 reads every figure from the stage summaries: a run that starts
    collapsed fires the signature without decaying; a run healthy first that falls below 5% decays."""
    from study.doc import section_part4

    collapsed = _run("gpt-seed0", [0.01, 0.02, 0.6, 0.5], [1.5, 2.0, 5.0, 6.0], refreshed=(3,))  # kept 0.5/0.6
    healthy = _run("kmeans-seed0", [0.25, 0.3, 0.8, 0.8], [6.0, 6.5, 7.0, 7.0], refreshed=(3,))
    decays = _run("kmeans-seed1", [0.12, 0.22, 0.03, 0.04], [6.0, 5.0, 4.0, 4.0])
    text = "\n".join(section_part4({"runs": [collapsed]}, {"runs": [healthy, decays]}, None,
                                   {"trials": [{"decay": {"decayed": False, "lowest_usage_epoch": 1}}]},
                                   {"config": "configs/x.yaml", "runs": [{}, {}],
                                    "pass_rates": {"calibrated": {"final_val_loss": 1, "context_rank": 2}}}))
    assert "appears in 1 of 3 quantized runs of sections 16-19 (kmeans-seed1), in 0 of 1 trials of section 19's " \
           "search." in text
    assert "1 of the 2 quantized runs of sections 17 and 18 began inside the seed's 20-30% usage after epoch 1 " \
           "(the others: 12%)" in text
    assert "fires in 1 of those runs, at the first epoch in 1: runs that start collapsed, whose usage at the end is 50%." in text
    assert "the usage just before the next refresh is 83%-100% of the usage right after one." in text
    assert "passes every checklist item in 1 of 2 fresh seeds; items it misses in some seed: final_val_loss (1/2)." in text
    assert section_part4(None, None, None, None, None) == []


def test_the_rung_section_names_both_cells_and_answers_from_its_runs():
    from study.doc import section_start_rung

    def cell(std, usage, rank):
        return [{"init": "kmeans", "colour_init_std": std, "seed": 0, "codebook/usage": usage, "rank/context": rank,
                 "rank/target": 20.0}]

    run = _run("sixth_run_kmeans_start_colour_std_2-seed0", [0.32, 0.5, 0.9], [13.0, 13.0, 14.0], refreshed=(2,))
    s = {"command": "python scripts/study.py startrung", "rung": {"dim": 128, "data": "arc12x2"},
         "rung_overrides": ["model.dim=128"], "seeds": [0], "epochs": 3,
         "grid": cell(0.3, 0.047, 5.7) + cell(2.0, 0.32, 13.0),
         "nearest_cell": {"init": "kmeans", "colour_init_std": 0.3},
         "nearest_usage_cell": {"init": "kmeans", "colour_init_std": 2.0}, "runs": [run]}
    text = "\n".join(section_start_rung(s))
    assert "| kmeans | 2 | 32.0% (32%) | 13 (13) | 20 |" in text
    assert "That cell (colour std 0.3) and the no-VQ diagnostic" in text and "(colour std 2), the start from which" in text
    assert "**Answer.** Even from the start nearest the seed's at this rung the seed's collapse does not appear here" in text


def test_section_20_sets_the_shipped_configs_verdict_beside_section_7s():
    from study.doc import _production_then_and_now

    def summary(rates, usages):
        return {"seeds": [1000, 1001], "pass_rates": {"calibrated": rates},
                "runs": [{"final": {"codebook/usage": u}} for u in usages]}

    text = _production_then_and_now(summary({"a": 2, "b": 1}, [0.81, 0.88]), summary({"a": 2, "b": 2}, [0.9, 0.83]))[0]
    assert text.endswith(": 1 of 2 items in every one of 2 seeds [1000, 1001], final usage 81%-88%. Here: 2 of 2 items "
                         "in every one of 2 seeds [1000, 1001], final usage 83%-90%.")
    assert _production_then_and_now(None, summary({"a": 2}, [0.9])) == []
