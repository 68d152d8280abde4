"""Quantizers: one file per method, all behind one interface.

    out = quantizer(z)            # z [M, D] continuous vectors (real object tokens only)
    out.quantized                 # [M, D], straight-through: forward = code vector, grad -> z
    out.indices                   # [M] long, code of each vector
    out.loss                      # scalar added to the training loss (logged as loss/vq)
    quantizer.lookup(indices)     # [*] -> [*, D] code vectors (indices -> vectors round trip)
    quantizer.refresh_dead_codes(generator) -> int   # codes revived (0 if not applicable)
    quantizer.num_codes           # K, explicit or implicit (FSQ: the product of its levels)

| kind     | file        | codebook                          | paper                          |
|----------|-------------|-----------------------------------|--------------------------------|
| ema      | ema.py      | EMA of assigned vectors           | van den Oord et al. 2017, A.1  |
| gradient | gradient.py | learned by the codebook loss      | van den Oord et al. 2017, eq 3 |
| gumbel   | gumbel.py   | soft assignment, learned          | Jang et al. 2017               |
| fsq      | fsq.py      | implicit grid, nothing learned    | Mentzer et al. 2023            |
"""

from __future__ import annotations

from model.quantizers.output import QuantizerOutput  # noqa: F401  (the quantizers' common output)


def build_quantizer(kind: str, dim: int, num_codes: int, commitment_cost: float, ema_decay: float | None,
                    epsilon: float, usage_threshold: float, init: str = "random", cosine: bool = False,
                    estimator: str = "ste", gumbel: dict | None = None, fsq_levels: list[int] | None = None,
                    seed: int = 0):
    """The quantizer named by `kind` (ema, gradient, gumbel, fsq) with plain arguments."""
    if kind == "ema":
        from model.quantizers.ema import EMAQuantizer

        return EMAQuantizer(dim, num_codes, commitment_cost, ema_decay, epsilon, usage_threshold, init,
                            cosine, estimator, seed)
    if kind == "gradient":
        from model.quantizers.gradient import GradientQuantizer

        return GradientQuantizer(dim, num_codes, commitment_cost, usage_threshold, init, cosine, estimator, seed)
    if kind == "gumbel":
        from model.quantizers.gumbel import GumbelQuantizer

        return GumbelQuantizer(dim, num_codes, seed=seed, **(gumbel or {}))
    if kind == "fsq":
        from model.quantizers.fsq import FSQuantizer

        return FSQuantizer(dim, fsq_levels)
    raise ValueError(f"unknown quantizer kind {kind!r}")
