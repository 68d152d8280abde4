import math

import pytest
import torch

from model.quantizers import build_quantizer
from model.quantizers._codebook import rotation_trick

D, K = 6, 16
VARIANTS = {
    "ema": dict(kind="ema"),
    "ema-kmeans-cosine-rotation": dict(kind="ema", init="kmeans", cosine=True, estimator="rotation"),
    "gradient": dict(kind="gradient", ema_decay=None),
    "gradient-kmeans-rotation": dict(kind="gradient", ema_decay=None, init="kmeans", estimator="rotation"),
    "gumbel": dict(kind="gumbel"),
    "fsq": dict(kind="fsq", fsq_levels=[3, 4, 2]),
}


def make(kind, ema_decay=0.9, init="random", cosine=False, estimator="ste", fsq_levels=(8, 5, 5, 5)):
    torch.manual_seed(0)
    codebook = dict(num_codes=K, commitment_cost=0.25, refresh_usage_threshold=0.05, init=init, cosine=cosine,
                    estimator=estimator)
    options = {"ema": {**codebook, "decay": ema_decay, "epsilon": 1e-5}, "gradient": codebook,
               "gumbel": {"num_codes": K}, "fsq": {"levels": tuple(fsq_levels)}}[kind]
    return build_quantizer(kind, D, 0, **options)


@pytest.mark.parametrize("name", VARIANTS)
def test_eval_outputs_lie_in_the_code_set_and_round_trip(name):
    q = make(**VARIANTS[name])
    q.train()
    q(torch.randn(200, D))  # one training step (k-means init, EMA update)
    q.eval()
    z = torch.randn(64, D)
    out = q(z)
    assert out.indices.shape == (64,) and out.indices.dtype == torch.long
    assert 0 <= out.indices.min() and out.indices.max() < q.num_codes
    assert torch.allclose(q.lookup(out.indices), out.quantized, atol=1e-5)  # indices -> vectors
    all_codes = q.lookup(torch.arange(q.num_codes))
    assert torch.cdist(out.quantized, all_codes, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() < 1e-4  # in the code set


@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_reach_the_encoder(name):
    q = make(**VARIANTS[name]).train()
    z = torch.randn(32, D, requires_grad=True)
    out = q(z)
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_gumbel_is_soft_in_training_and_hard_at_eval():
    q = make("gumbel")
    z = torch.randn(32, D)
    q.train()
    soft = q(z).quantized
    codes = q.lookup(torch.arange(K))
    assert torch.cdist(soft, codes, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() > 1e-3  # mixtures, not rows
    q.eval()
    hard = q(z)
    assert torch.equal(hard.quantized, codes[hard.indices])
    assert torch.equal(hard.indices, q.to_logits(z).argmax(-1))


def test_gumbel_temperature_anneals_to_its_floor():
    q = build_quantizer("gumbel", D, num_codes=K, temperature_start=1.0, temperature_min=0.5, anneal_rate=0.1)
    q.train()
    assert q.temperature() == 1.0
    for _ in range(3):
        q(torch.randn(4, D))
    assert abs(q.temperature() - math.exp(-0.3)) < 1e-12
    for _ in range(20):
        q(torch.randn(4, D))
    assert q.temperature() == 0.5


def test_gumbel_kl_to_uniform_is_zero_for_uniform_logits():
    q = make("gumbel").eval()
    with torch.no_grad():
        q.to_logits.weight.zero_()
        q.to_logits.bias.zero_()
    assert abs(q(torch.randn(8, D)).loss.item()) < 1e-7


def test_fsq_code_count_is_product_of_levels_and_all_codes_are_distinct():
    q = make("fsq", fsq_levels=[3, 4, 2])
    assert q.num_codes == 24
    codes = q.indices_to_codes(torch.arange(24))
    assert len({tuple(c.tolist()) for c in codes}) == 24
    assert torch.equal(q.codes_to_indices(codes), torch.arange(24))
    # every grid point is reachable: push large inputs through and count distinct indices
    u = torch.randn(20000, 3) * 3
    assert torch.unique(q.codes_to_indices(q.quantize_codes(u))).numel() == 24


def test_kmeans_init_places_codes_on_the_data():
    q = make("ema", init="kmeans").train()
    centres = torch.randn(K, D) * 10
    z = centres.repeat_interleave(20, 0) + 0.01 * torch.randn(K * 20, D)
    q(z)
    assert bool(q.initialised)
    # each true centre has a code within noise distance
    assert torch.cdist(centres, q.codebook, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() < 0.5


def test_kmeans_init_runs_once_and_a_loaded_state_decides():
    trained = make("gradient", ema_decay=None, init="kmeans").train()
    trained(torch.randn(50, D) * 3)  # k-means on this batch
    codebook = trained.codebook.detach().clone()
    trained(torch.randn(50, D) * 7)  # initialised: no second k-means (a gradient codebook moves only by its optimiser)
    assert torch.equal(trained.codebook, codebook)
    loaded = make("gradient", ema_decay=None, init="kmeans").train()
    loaded.load_state_dict(trained.state_dict())
    loaded(torch.randn(50, D))
    assert torch.equal(loaded.codebook, codebook), "the loaded codebook is kept, not re-initialised"
    fresh_state = make("gradient", ema_decay=None, init="kmeans").state_dict()  # initialised = False
    loaded.load_state_dict(fresh_state)
    loaded(torch.randn(50, D) * 3)
    assert bool(loaded.initialised) and not torch.equal(loaded.codebook, fresh_state["codebook"])


def test_usage_counts_add_up_each_code():
    q = make("ema").train()
    q.record(torch.randn(5, D), torch.tensor([0, 2, 2, 5, 2]))
    q.record(torch.randn(2, D), torch.tensor([5, 15]))
    expected = torch.zeros(K)
    expected[[0, 2, 5, 15]] = torch.tensor([1.0, 3.0, 2.0, 1.0])
    assert torch.equal(q.counts, expected)


def test_cosine_codes_are_unit_norm():
    q = make("gradient", ema_decay=None, cosine=True).eval()
    out = q(torch.randn(10, D) * 5)
    assert torch.allclose(out.quantized.norm(dim=-1), torch.ones(10), atol=1e-5)


def test_rotation_trick_forward_is_the_code_and_gradient_differs_from_ste():
    z = torch.randn(5, D, requires_grad=True)
    e = torch.randn(5, D)
    q = rotation_trick(z, e)
    assert torch.allclose(q, e, atol=1e-5)
    (q * torch.arange(D)).sum().backward()
    ste_grad = torch.arange(D, dtype=torch.float).expand(5, D)  # STE passes the gradient unchanged
    assert not torch.allclose(z.grad, ste_grad)


def test_uniform_init_is_the_reference_vqvae_range_and_reproducible():
    from model.quantizers._codebook import initial_codebook

    book = initial_codebook(K, D, "uniform", seed=3)
    assert book.shape == (K, D) and book.abs().max() <= 1.0 / K
    assert book.abs().max() > 0.5 / K  # fills the range, not a point
    assert torch.equal(book, initial_codebook(K, D, "uniform", seed=3))
    q = make("ema", init="uniform")
    assert torch.equal(q.codebook, initial_codebook(K, D, "uniform", seed=0))


@pytest.mark.parametrize("kind,init", [("ema", "random"), ("ema", "uniform"), ("gradient", "random"), ("gumbel", "random")])
def test_the_codebook_draws_on_a_stream_of_its_own(kind, init):
    """The trainer seeds the model's parameters with torch.manual_seed(seed) and builds the
    quantizer with the same seed. The codebook must not repeat those draws: with a generator
    seeded by the bare seed, its rows held exact copies of the encoder's colour embeddings
    (cosine 1.0), and every token started at the code of its colour (10 codes used)."""
    from model.config import load_config
    from model.train import build_model
    from tests.conftest import ROOT

    for seed in (0, 1, 7):
        cfg = load_config(ROOT / "configs" / "sixth_run.yaml", [f"seed={seed}", f"vq.kind={kind}", f"vq.init={init}"])
        torch.manual_seed(cfg.seed)  # as model/train.py's start_run
        model = build_model(cfg)
        codes = torch.nn.functional.normalize(model.quantizer.codebook_tensor().detach() if kind != "gumbel"
                                              else model.quantizer.codebook.detach(), dim=1)
        for name, parameter in model.named_parameters():
            if "codebook" not in name and parameter.dim() == 2 and parameter.shape[1] == codes.shape[1]:
                cos = torch.nn.functional.normalize(parameter.detach(), dim=1) @ codes.T
                assert cos.abs().max() < 0.9, f"seed {seed}: the codebook repeats rows of {name}"
        torch.manual_seed(cfg.seed)
        again = build_model(cfg).quantizer.state_dict()
        assert all(torch.equal(v, model.quantizer.state_dict()[k]) for k, v in again.items()), "same seed, same codebook"


TOY_QUANTIZER = '''
"""A toy quantizer: the nearest row of a fixed random codebook, nothing learned."""
from dataclasses import dataclass

import torch
from torch import nn

from model.quantizers.output import QuantizerOutput


@dataclass(frozen=True)
class ToyConfig:
    num_codes: int = 8  # K
    scale: float = 1.0  # std of the fixed codes


class ToyQuantizer(nn.Module):
    Config = ToyConfig

    def __init__(self, dim, config, seed=0):
        super().__init__()
        self.num_codes = config.num_codes
        g = torch.Generator().manual_seed(seed + 1)
        self.register_buffer("codebook", config.scale * torch.randn(config.num_codes, dim, generator=g))

    def lookup(self, indices):
        return self.codebook[indices]

    def refresh_dead_codes(self, generator):
        return 0

    def forward(self, z):
        indices = torch.cdist(z, self.codebook).argmin(-1)
        return QuantizerOutput(z + (self.codebook[indices] - z).detach(), indices, z.new_zeros(()))
'''


def test_a_new_quantizer_is_one_file_and_one_registration_line(tmp_path, monkeypatch):
    """Its file declares the quantizer and its options; one line in KINDS makes it a `vq.kind` the
    training config accepts, built by keyword with the options the config's `vq:` section names."""
    from model.config import ConfigError, load_config
    from model.quantizers import KINDS
    from model.train import build_model, loss_weights, make_optimizer, train_step
    from tests.conftest import ROOT

    (tmp_path / "toyquant.py").write_text(TOY_QUANTIZER)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="vq: kind: 'toy' is not a quantizer"):
        load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.kind=toy"])
    monkeypatch.setitem(KINDS, "toy", "toyquant:ToyQuantizer")  # the registration line
    q = build_quantizer("toy", D, seed=0, num_codes=5, scale=2.0)
    assert type(q).__name__ == "ToyQuantizer" and q.codebook.shape == (5, D)
    with pytest.raises(ValueError, match="quantizer 'toy' has no option 'decay' \\(its options: num_codes, scale\\)"):
        build_quantizer("toy", D, decay=0.9)
    # its own option in the config's `vq.options` (no field added anywhere), checked against its Config
    with pytest.raises(ConfigError, match="vq: .*options: 'scal' is not an option of kind 'toy' \\(its options: "
                       "num_codes, scale\\); did you mean 'scale'\\?"):
        load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.kind=toy", "vq.options.scal=3.0"])
    # the trainer builds it from a training config, and a step trains through it
    cfg = load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.kind=toy", "vq.num_codes=12", "data.max_tasks=20",
                                                           "vq.options.scale=0.0"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model.quantizer).__name__ == "ToyQuantizer" and model.quantizer.num_codes == 12
    assert float(model.quantizer.codebook.abs().max()) == 0.0  # scale 0 reached the quantizer
    from model.data import load_arc_data, make_batch, make_examples

    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    g = torch.Generator().manual_seed(0)
    contexts, targets = make_examples(data.train_tasks, cfg.data.context_length, g)
    idx = torch.arange(cfg.training.batch_size) % len(targets)
    batch = make_batch(data.records, contexts[idx], targets[idx], None, torch.device("cpu"))
    values = train_step(model, make_optimizer(model, cfg.training.lr, cfg.training.weight_decay), batch,
                        loss_weights(cfg), g, cfg.training.grad_clip.max_norm, momentum=0.996)
    assert math.isfinite(float(values["total"])) and float(values["vq"]) == 0.0


def test_a_config_section_gives_each_kind_its_own_options():
    from model.config import load_config
    from model.quantizers import options_of
    from tests.conftest import ROOT

    vq = load_config(ROOT / "configs" / "sixth_run.yaml").vq
    assert set(options_of("ema", vq)) == {"num_codes", "commitment_cost", "decay", "epsilon", "refresh_usage_threshold",
                                          "init", "cosine", "estimator"}
    assert options_of("ema", vq)["decay"] == vq.ema_decay
    assert options_of("gumbel", vq) == {"num_codes": vq.num_codes, "temperature_start": vq.gumbel_temperature_start,
                                        "temperature_min": vq.gumbel_temperature_min,
                                        "anneal_rate": vq.gumbel_anneal_rate, "kl_weight": vq.gumbel_kl_weight}
    assert options_of("fsq", vq) == {"levels": tuple(vq.fsq_levels)}


def test_a_kinds_options_by_their_own_names_win_over_the_flat_fields(tmp_path):
    """`vq: {kind: fsq, options: {levels: ...}}` in a YAML file: the kind's own names, over the flat
    fields; the resolved config written beside a run loads back to the same options."""
    from model.config import ConfigError, dump_config, load_config
    from model.quantizers import options_of
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.kind=fsq", "vq.options={levels: [5, 3]}"])
    assert options_of("fsq", cfg.vq) == {"levels": (5, 3)} and cfg.vq.fsq_levels == [8, 5, 5, 5]
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert options_of("fsq", load_config(tmp_path / "resolved.yaml").vq) == {"levels": (5, 3)}
    ema = load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.options.decay=0.9"]).vq
    assert options_of("ema", ema)["decay"] == 0.9 and ema.ema_decay == 0.99
    with pytest.raises(ConfigError, match="options: 'levels' is not an option of kind 'ema'"):
        load_config(ROOT / "configs" / "sixth_run.yaml", ["vq.options.levels=[5, 3]"])
