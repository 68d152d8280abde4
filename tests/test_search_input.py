"""scripts/search.py on bad input: exit 2, a message naming file and key, no traceback, nothing written."""

import pytest

from tests.conftest import ROOT, run_script

GOOD = (ROOT / "spaces" / "smoke.yaml").read_text()

CASES = [
    # (space text or None for a missing file, extra args, expected message)
    (None, [], "no such file"),
    ("{not: yaml: at all", [], "not valid YAML"),
    ("- just\n- a list\n", [], "top level must be a mapping"),
    (GOOD.replace("budget:", "budgett:"), [], "unknown key; did you mean 'budget'?"),
    (GOOD.replace("num_samples: 4", "num_samples: four"), [], "budget.num_samples: Input should be a valid integer"),
    (GOOD.replace("low: 0.05, high: 0.5", "low: 0.5, high: 0.05"), [], "must be < high"),
    (GOOD.replace("low: 0.05, high: 0.5", "low: 0.0, high: 0.5"), [], "log range must be > 0"),
    (GOOD.replace("choices: [true, false]", "choices: []"), [], "non-empty list of choices"),
    (GOOD.replace("when: {vq.refresh_enabled: true}", "when: {vq.refresh: true}"), [], "not an earlier parameter"),
    (GOOD.replace("loss.temperature_min: {dist: loguniform, low: 0.03, high: 0.1}",
                  "vq.ema_decay: {dist: fixed, value: 1.5}"), [], "value 1.5 is not accepted by the trainer"),
    (GOOD.replace("../configs/vq_gentle.yaml", "../configs/nope.yaml"), [], "not found"),
    (GOOD.replace("num_samples: 4", "num_samples: 0"), [], "budget.num_samples"),
    (GOOD.replace("max_epochs: 2", "max_epochs: 0"), [], "budget.max_epochs"),
    (GOOD.replace("grace_period: 1", "grace_period: 3"), [], "grace_period (3) must be <= max_epochs (2)"),
    (GOOD, ["--num-samples", "0"], "--num-samples: must be >= 1"),
    (GOOD, ["--name", "../escape"], "--name '../escape'"),
    (GOOD, ["--name", "/abs"], "--name '/abs'"),
    (GOOD, ["--gpu", "1.5"], "--gpu in [0, 1]"),
    (GOOD, ["--resume"], "holds no experiment to resume"),
    (GOOD, ["--max-concurrent", "-1"], "--max-concurrent: must be >= 0"),
    (GOOD.replace("reduction_factor: 2", "reduction_factor: 2\n  early_stopping: sometimes"), [],
     "budget.early_stopping: Input should be a valid boolean"),
]


@pytest.mark.parametrize("text,args,message", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_search_input(tmp_path, text, args, message):
    space = tmp_path / "spaces" / "bad.yaml"
    if text is not None:
        space.parent.mkdir()
        space.write_text(text.replace("../configs/", f"{ROOT}/configs/"))
    storage = tmp_path / "results"
    proc = run_script("scripts/search.py", str(space), "--storage", str(storage), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    if text is not None and not args:
        assert str(space) in proc.stderr  # the file is named
    assert "Traceback" not in proc.stderr
    assert not storage.exists()  # nothing written


@pytest.mark.slow
def test_resources_beyond_the_cluster_are_refused(tmp_path):
    storage = tmp_path / "results"
    proc = run_script("scripts/search.py", "spaces/smoke.yaml", "--storage", str(storage), "--cpu", "64")
    assert proc.returncode == 2
    assert "64.0 CPUs per trial, but the cluster has" in proc.stderr and "Traceback" not in proc.stderr
    assert not storage.exists()


def test_a_trial_worker_drops_only_the_exits_of_its_own_stopping(capsys):
    """search/runner.py: quiet_exit_while_stopping, a worker's sys.unraisablehook: a SystemExit
    raised where Python cannot propagate it (here a __del__, as Ray's SIGTERM handler inside a
    weakref callback) prints nothing; any other unraisable exception is printed as Python's
    default hook prints it."""
    import sys

    from search.runner import quiet_exit_while_stopping

    class Exits:
        def __del__(self):
            raise SystemExit(1)

    class Fails:
        def __del__(self):
            raise ValueError("kept")

    before = sys.unraisablehook
    sys.unraisablehook = quiet_exit_while_stopping
    try:
        gone = Exits()
        del gone
        assert capsys.readouterr().err == ""
        gone = Fails()
        del gone
        assert "ValueError: kept" in capsys.readouterr().err
    finally:
        sys.unraisablehook = before
