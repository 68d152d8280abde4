"""The analysis in bench/search_efficiency.py, on hand-built runs with hand-computed answers; one
throughput row of bench/train_throughput.py and a small bench/load.py run for real."""

import math
import re

import pytest

from bench.search_efficiency import (Run, Trial, epoch_overhead, epochs_to_reach, first_checklist_pass_s,
                                     goals_section, most_checklist_items, shares, startup_s, time_to_reach,
                                     trial_epochs)


def healthy(epoch: int) -> dict:
    """An epoch's metrics that pass every item of the seed's checklist."""
    return {"epoch": epoch, "codebook/usage": 0.3, "rank/context": 12.0, "rank/target": 25.0, "val/loss": 3.0,
            "val/loss_reference": 3.0, "grad/norm_mean": 1.0, "grad/norm_max": 2.0, "time/train_s": 2.0, "time/eval_s": 0.5, "time/epoch_s": 2.5}


def make_run() -> Run:
    # trial a: 2 epochs reported at t=101 and t=103 (scores 0.5 then 0.9), healthy, 1 core
    # (its reports 1.2 s and 2.6 s apart; each epoch 2.5 s: overhead 0.1 s in its second)
    a = Trial([healthy(1), healthy(2)], [0.5, 0.9], [101.0, 103.0], cpus=1,
              timing={"assigned": 100.0, "start": 100.5, "first_step": 100.8, "end": 103.0}, iter_s=[1.2, 2.6])
    # trial b: stopped after 1 epoch at t=102 (score 0.95), 1 core, collapsed usage
    # (a reused worker took it at 101.0)
    b = Trial([{**healthy(1), "codebook/usage": 0.01}], [0.95], [102.0], cpus=1,
              timing={"assigned": 101.0, "start": 101.2, "first_step": 101.5, "end": 102.0}, iter_s=[1.0],
              worker_trials=2)
    return Run("r", wall_s=5.0, started=99.0, cpus=2, trials=[a, b], max_epochs=2)


def test_epochs_to_reach_counts_reports_in_time_order_until_a_trial_ends_at_target():
    run = make_run()
    assert trial_epochs(run) == 3
    assert epochs_to_reach(run, 0.95) == 2  # a@101, then b ends at 102 with 0.95
    assert epochs_to_reach(run, 0.9) == 2  # a's 0.5 at 101 is not its end; b's end at 102 counts
    assert epochs_to_reach(run, 0.5) == 2  # a reported 0.5 at 101 but did not end there
    assert epochs_to_reach(run, 0.96) is None


def test_shares_split_wall_time_times_cores():
    parts = shares(make_run())  # wall x cores = 10 core-seconds
    assert parts["training steps"] == pytest.approx((2 * 2.0 + 2.0) / 10)
    assert parts["evaluation"] == pytest.approx((2 * 0.5 + 0.5) / 10)
    assert parts["trial start-up"] == pytest.approx((0.8 + 0.5) / 10)
    # before the first trial is taken (100 - 99) and after the last end (104 - 103), of 5 s
    assert parts["search start and finish"] == pytest.approx(2 / 5)
    assert sum(parts.values()) == pytest.approx(1.0)


def test_startup_overhead_and_time_to_reach():
    run = make_run()
    assert [startup_s(t) for t in run.trials] == pytest.approx([0.8, 0.5])
    assert epoch_overhead(run) == pytest.approx(0.1 / 2.5)  # only a's second epoch: a first epoch has start-up
    assert time_to_reach(run, 0.9) == pytest.approx(102.0 - 99.0)  # b ends with 0.95 at 102, before a's 0.9 at 103
    run.trials[1].scores = [0.7]
    assert time_to_reach(run, 0.9) == pytest.approx(103.0 - 99.0)  # only a now
    assert time_to_reach(run, 0.96) is None


def test_goals_are_judged_on_the_figures():
    run = make_run()
    peer = Run("optuna", wall_s=10.0, started=0.0, cpus=2, max_epochs=2, trials=[
        Trial([healthy(1)], [0.95], [8.0], cpus=2, timing={"assigned": 0.0, "start": 0.0, "first_step": 0.1})])
    # the search's own record: launched at 99, Ray's start begun 99.5, Ray up 99.8, Tune returned 103.2,
    # the report written 103.4 while Ray stopped (103.5), the session's end 103.9 (process gone at 104 =
    # 99 + wall 5 s: a hand-made example)
    run.phases = {"started": 99.5, "ray_ready": 99.8, "trials_done": 103.2, "ray_stopped": 103.5, "reported": 103.4,
                  "ended": 103.9}
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in goals_section(run, run, peer) if "|" in line}
    assert rows["trial start-up, median (worker takes the trial -> first step)"].endswith(
        "| 0.65 s | <= 0.5 s | no | 1 trials in fresh workers, median 0.80 s |")
    # the first step at 100.8 (trial a), 1.8 s after the launch at 99; the last end 103, the exit 104: 1 s
    timeline = ("before the first step: the script's start (Python, imports, the space checked) 0.5 s, Ray's start "
                "(with its dashboard; the search code's imports run meanwhile) 0.3 s, 0.2 s until a worker takes the "
                "first trial, then its start-up 0.8 s; after the last trial: 0.2 s until Tune returns, 0.3 s Ray's "
                "stop (the export and report, 0.2 s, run meanwhile), 0.1 s the process's exit |")
    assert rows["from the command to the first trial's first step"].endswith("| 1.8 s | <= 4 s | yes |  |")
    assert rows["from the last trial's end to the command's exit"].endswith("| 1.0 s | <= 2 s | yes |  |")
    run.trials[0].timing["first_step"] = 104.0  # now trial b's 101.5 is the first step: 2.5 s
    run.started, run.wall_s = 97.0, 7.0  # launched 2 s earlier (exit still at 104): 4.5 s, over the bar, the timeline its cause
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in goals_section(run, run, peer) if "|" in line}
    assert rows["from the command to the first trial's first step"].endswith(
        "| 4.5 s | <= 4 s | no | " + timeline.replace("start-up 0.8 s", "start-up 0.5 s").replace(
            "checked) 0.5 s", "checked) 2.5 s"))
    # training steps: 6 core-seconds of 14 (wall 7 s x 2 cores)
    assert rows["training steps, share of the whole command's core-seconds (Ray's start and the report included)"
                ].split(" | ")[1:4] == ["43%", ">= 75%", "no"]
    # 3 trial-epochs in 7 s against 1 in 10 s: 4.29x
    assert "| 4.29x | >= 1.2x | yes |  |" in rows["trial-epochs per minute against plain Optuna"]
    # the no-ES best (the same run here: 0.95) at 102 - 97 = 5 s against the peer's 8 s
    assert "| 5 s against 8 s: 0.62x | <= 0.6x | no |" in next(v for k, v in rows.items() if k.startswith("wall time"))
    assert next(v for k, v in rows.items() if k.startswith("per-epoch")).endswith("| 4.0% | <= 5% | yes |  |")


def test_first_checklist_pass_is_the_earliest_healthy_full_length_trial():
    run = make_run()
    assert first_checklist_pass_s(run) == pytest.approx(103.0 - 99.0)  # b fails usage and length
    run.trials[0].history[0]["codebook/usage"] = 0.01
    assert first_checklist_pass_s(run) is None


def test_most_checklist_items_counts_the_best_trial():
    run = make_run()
    assert most_checklist_items(run) == "8/8"
    run.trials[0].history[1]["rank/target"] = 10.0  # a misses target rank; b misses usage and length
    assert most_checklist_items(run) == "7/8"


def test_wall_time_of_a_finished_experiment(tmp_path):
    import json

    from bench.search_wall_time import experiment_wall_time

    for name, start, end in (("trial_a", 100.0, 160.0), ("trial_b", 130.0, 400.0)):
        (tmp_path / name / "run").mkdir(parents=True)
        (tmp_path / name / "run" / "placement.json").write_text(json.dumps({"start": start, "end": end}))
    seconds, how = experiment_wall_time(tmp_path)
    assert seconds == 300.0 and "placement.json" in how  # first start to last end
    (tmp_path / "search_time.json").write_text(json.dumps({"sessions": [{"wall_s": 500.0}, {"wall_s": 20.0}]}))
    seconds, how = experiment_wall_time(tmp_path)
    assert seconds == 520.0 and "2 session(s)" in how  # the search's own record wins, resumed sessions add up


def test_bench_conclusions_follow_from_their_figures():
    from bench.cost_growth import limited_by as cost_limit
    from bench.search_wall_time import limited_by as wall_limit
    from bench.train_throughput import limited_by as step_limit, thread_scaling

    ops = {"aten::addmm": [3.0, 40], "aten::bmm": [1.0, 8], "aten::add": [6.0, 30]}  # ms and calls per step
    text = step_limit(ops, fraction=0.12, batch_share=0.05, threads=1)
    assert "the model's own ops" in text and "12% of the matmul limit: 40% of its op time" in text
    assert "`aten::add` (60%), `aten::addmm` (30%), `aten::bmm` (10%)" in text
    assert step_limit(ops, 0.12, 0.6, 1).startswith("Limited by: batch building, 60%")
    two = {"aten::addmm": [1.5, 40], "aten::bmm": [1.0, 8], "aten::add": [3.5, 30]}  # bmm does not scale
    text = thread_scaling(ops, two, batch_ms=2.0)
    assert "falls from 10.0 to 6.0 ms a step (1.67x)" in text and "batch building (2.0 ms a step)" in text
    assert text.index("`aten::bmm` 1.00 -> 1.00 ms") < text.index("`aten::add` 6.00 -> 3.50 ms")
    assert "the training steps, 80%" in cost_limit({"train_s": 8.0, "eval_s": 2.0})
    assert "the evaluation, 75%" in cost_limit({"train_s": 1.0, "eval_s": 3.0})
    assert "the trials' epochs: epochs take 75%" in wall_limit(epoch_s=90.0, wall=60.0, cores=2)
    assert "outside the epochs: epochs take 25%" in wall_limit(epoch_s=30.0, wall=60.0, cores=2)


def test_epoch_seconds_sum_every_trial_s_epochs(tmp_path):
    import json

    from bench.search_wall_time import epoch_seconds

    for name, times in (("trial_a", [2.0, 3.0]), ("trial_b", [4.5])):
        (tmp_path / name / "run").mkdir(parents=True)
        (tmp_path / name / "run" / "metrics.jsonl").write_text("".join(json.dumps({"time/epoch_s": t}) + "\n"
                                                                       for t in times))
    assert epoch_seconds(tmp_path) == 9.5


@pytest.mark.slow
def test_a_throughput_row_runs_in_its_own_process_with_and_without_the_batch_built_ahead():
    """bench/train_throughput.py's child on this tree: a real step on the real data, with the batch
    built in the step's thread (its share measured) and one step ahead in a Python thread (no
    share of its own: NaN, shown as overlapped)."""
    from bench.train_throughput import ROOT, Row, run_child

    plain = run_child(ROOT, "configs/stable_production.yaml", Row("packed", "this commit", "packed", 64, 1), 2, False)
    ahead = run_child(ROOT, "configs/stable_production.yaml",
                      Row("packed, ahead", "this commit", "packed", 64, 1, prefetch=True), 2, False)
    for row in (plain, ahead):
        assert row["samples_per_s"] > 0 and row["flops_per_sample"] > 0 and row["matmul_flops_per_s"] > 0
        assert row["ms_per_step"] == pytest.approx(64 * 1e3 / row["samples_per_s"])
    assert 0 < plain["batch_share"] < 1 and math.isnan(ahead["batch_share"])


@pytest.mark.slow
def test_the_load_bench_counts_every_trial_once_through_a_driver_kill_and_resume(tmp_path):
    """bench/load.py for real at a small size: whole search, then SIGKILL of the driver halfway
    and --resume; its audit (exactly the budget in the study, trial folders, trials.csv, every
    trial's epochs once) passes, and the section names its command and figures."""
    from bench.load import main

    out = tmp_path / "load.md"
    assert main(["--trials", "16", "--concurrent", "4", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Measured by `python bench/load.py --trials 16 --concurrent 4`" in text
    assert text.count("| pass |") == 2 and "| whole search | 0 |" in text and "| `--resume` of it | 0 |" in text
    killed_at = int(re.search(r"SIGKILL after (\d+) trials ended", text).group(1))
    assert 8 <= killed_at < 16, "killed halfway"
