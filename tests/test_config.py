import pytest

from model.config import ConfigError, TrainConfig, load_config
from tests.conftest import ROOT, run_script

BAD = [
    ("vq: {comitment_cost: 0.1}", "vq.comitment_cost: unknown key; did you mean 'commitment_cost'?"),
    ("vq: {ema_decay: 1.0}", "vq.ema_decay: Input should be less than 1"),
    ("vq: {ema_decay: -0.1}", "vq.ema_decay: Input should be greater than or equal to 0"),
    ("vq: {commitment_cost: -1}", "vq.commitment_cost: Input should be greater than or equal to 0"),
    ("vq: {num_codes: '256'}", "vq.num_codes: Input should be a valid integer"),
    ("loss: {temperature_min: 0.2, temperature_max: 0.1}", "loss: temperature_min (0.2) must be <= temperature_max (0.1)"),
    ("data: {context_length: 0}", "data.context_length: Input should be greater than or equal to 1"),
    ("data: {sources: [arc3]}", "data.sources.0: Input should be 'arc1' or 'arc2'"),
    ("data: {augment: false, augment_copies: 8}", "data: augment_copies (8) > 1 repeats identical examples unless augment is true"),
    ("model: {dim: 64, heads: 5}", "model: heads (5) must divide dim (64)"),
    ("training: {grad_clip: {max_norm: 0}}", "training.grad_clip.max_norm: Input should be greater than 0"),
    ("tranining: {epochs: 3}", "tranining: unknown key; did you mean 'training'?"),
    ("- a\n- b", "top level must be a mapping"),
    ("vq: [unclosed", "not valid YAML"),
    ("name: ../escape", "name: String should match pattern"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_configs_are_rejected_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_scientific_notation_and_overrides(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("training: {lr: 3e-4}\n")
    cfg = load_config(path, ["vq.ema_decay=0.95", "vq.enabled=false"])
    assert cfg.training.lr == 3e-4 and cfg.vq.ema_decay == 0.95 and cfg.vq.enabled is False
    with pytest.raises(ConfigError, match="vq.ema_decay"):
        load_config(path, ["vq.ema_decay=2"])


def test_all_shipped_configs_validate():
    """Every JEPA config validates; every run file (a contract trainer's) validates as its trainer's config."""
    from model.config import read_yaml_mapping
    from model.vqvae import vqvae_config
    from search.contract import read_run_file

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = read_yaml_mapping(path)
        if "trainer" in raw:
            assert read_run_file(raw, str(path))["trainer"] == "model.vqvae:train", path
            vqvae_config(raw["config"], str(path))
        else:
            assert isinstance(load_config(path), TrainConfig), path


def test_train_script_rejects_bad_config_exit_2_no_traceback(tmp_path, results):
    path = tmp_path / "bad.yaml"
    path.write_text("vq: {ema_decay: 1.5}\n")
    proc = run_script("scripts/train.py", str(path), "--results", str(results))
    assert proc.returncode == 2
    assert "vq.ema_decay" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not results.exists()  # nothing written
