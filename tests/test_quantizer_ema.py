import torch

from model.quantizers.ema import EMAConfig, EMAQuantizer


def make(k=8, d=4, decay=0.9, eps=1e-5, threshold=0.05):
    torch.manual_seed(0)
    return EMAQuantizer(d, EMAConfig(num_codes=k, commitment_cost=0.25, decay=decay, epsilon=eps,
                                     refresh_usage_threshold=threshold))


def test_outputs_are_codebook_rows_and_indices_round_trip():
    q = make().eval()
    z = torch.randn(50, 4)
    out = q(z)
    assert torch.allclose(out.quantized, q.codebook[out.indices])
    assert torch.allclose(q.lookup(out.indices), out.quantized, atol=1e-6)  # z + (e - z) rounds
    # each output is the nearest code (brute force)
    brute = torch.cdist(z, q.codebook).argmin(1)
    assert torch.equal(out.indices, brute)


def test_straight_through_gradient_reaches_input():
    q = make().eval()
    z = torch.randn(10, 4, requires_grad=True)
    out = q(z)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_commitment_loss_value():
    q = make().eval()
    z = torch.randn(6, 4)
    out = q(z)
    expected = 0.25 * ((z - q.codebook[out.indices]) ** 2).mean()
    assert torch.allclose(out.loss, expected)


def test_one_ema_step_matches_hand_computation():
    k, d, decay, eps = 3, 2, 0.9, 1e-5
    q = EMAQuantizer(d, EMAConfig(num_codes=k, commitment_cost=0.0, decay=decay, epsilon=eps))
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]]))
        q.embed_sum.copy_(q.codebook)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])  # two to code 0, one to code 1
    q.train()
    q(z)
    # hand computation: N = 0.9 * 1 + 0.1 * n ;  m = 0.9 * e + 0.1 * sum z
    n_i = torch.tensor([0.9 + 0.2, 0.9 + 0.1, 0.9])
    m = torch.tensor([[0.1 * 1.0, 0.1 * 1.0], [0.9 * 10 + 0.1 * 9, 0.9 * 10 + 0.1 * 9], [-9.0, 4.5]])
    total = n_i.sum()
    smoothed = (n_i + eps) / (total + k * eps) * total
    assert torch.allclose(q.cluster_size, n_i)
    assert torch.allclose(q.embed_sum, m)
    assert torch.allclose(q.codebook, m / smoothed[:, None], atol=1e-6)
    assert torch.equal(q.counts, torch.tensor([2.0, 1.0, 0.0]))


def test_refresh_revives_dead_codes_from_recent_outputs():
    q = make(k=8, d=4)
    q.train()
    z = torch.randn(64, 4) * 0.01 + 5.0  # a tight cluster: one or two codes take everything
    q(z)
    dead_before = int(q.dead_codes().sum())
    assert dead_before >= 6
    revived = q.refresh_dead_codes(torch.Generator().manual_seed(0))
    assert revived == dead_before
    # revived codes are now vectors of the recent batch, so they win assignments again
    recent = {tuple(v.tolist()) for v in z}
    assert sum(tuple(c.tolist()) in recent for c in q.codebook) >= revived
    assert q.counts.sum() == 0  # a new counting window
    q.eval()
    assert torch.unique(q(z).indices).numel() > 2


def test_refresh_leaves_used_codes_alone():
    q = make(k=4, d=2, threshold=0.05)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
        q.embed_sum.copy_(q.codebook)
    q.train()
    q(q.codebook.clone().repeat(10, 1))  # every code used equally
    before = q.codebook.clone()
    assert q.refresh_dead_codes(torch.Generator().manual_seed(0)) == 0
    assert torch.equal(q.codebook, before)
