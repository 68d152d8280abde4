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
    return build_quantizer(kind, D, K, 0.25, ema_decay, 1e-5, 0.05, init, cosine, estimator,
                           None, list(fsq_levels), seed=0)


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
    q = build_quantizer("gumbel", D, K, 0.0, None, 1e-5, 0.0,
                        gumbel={"temperature_start": 1.0, "temperature_min": 0.5, "anneal_rate": 0.1})
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
