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

Each file declares its quantizer and, as the class's `Config`, a frozen dataclass of its own
options (documented where declared). A quantizer is built by keyword from its options:

    build_quantizer("ema", dim=64, seed=0, num_codes=256, decay=0.99)

A new quantizer is one file (a class taking (dim, config, seed) with its Config) plus one line
in KINDS. A training config's `vq:` section selects it with `kind` and sets its options under
their own names in `options:`, checked against its Config (model/config.py: VQConfig):

    vq: {kind: fsq, options: {levels: [8, 5, 5, 5]}}

The section's flat fields stay for the built-in kinds (every existing YAML): `options_of(kind,
section)` reads option `x` from the section's `<kind>_x` where it has one (`ema_decay`,
`gumbel_kl_weight`, `fsq_levels`), else its `x`, then `options:` over them.
"""

from __future__ import annotations

import dataclasses
import importlib

from model.quantizers.output import QuantizerOutput  # noqa: F401  (the quantizers' common output)

# kind -> "module:class" (one line per quantizer)
KINDS = {
    "ema": "model.quantizers.ema:EMAQuantizer",
    "gradient": "model.quantizers.gradient:GradientQuantizer",
    "gumbel": "model.quantizers.gumbel:GumbelQuantizer",
    "fsq": "model.quantizers.fsq:FSQuantizer",
}


def quantizer_class(kind: str) -> type:
    if kind not in KINDS:
        raise ValueError(f"unknown quantizer kind {kind!r} (known: {', '.join(KINDS)})")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_quantizer(kind: str, dim: int, seed: int = 0, **options):
    """The quantizer `kind` on vectors of width `dim`, its options by keyword (its Config's
    fields; the others keep their defaults); ValueError naming an option it does not have."""
    cls = quantizer_class(kind)
    known = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"quantizer {kind!r} has no option {unknown[0]!r} (its options: {', '.join(known)})")
    return cls(dim, cls.Config(**options), seed=seed)


def options_of(kind: str, section) -> dict:
    """The options of quantizer `kind` that a config section (flat fields, any object) sets:
    option `x` from the section's `<kind>_x` if it has one, else its `x`; options the section
    lacks keep their defaults."""
    out = {}
    for f in dataclasses.fields(quantizer_class(kind).Config):
        for name in (f"{kind}_{f.name}", f.name):
            if hasattr(section, name):
                out[f.name] = getattr(section, name)
                break
    out.update(getattr(section, "options", None) or {})  # the section's `options:`, by the Config's own names
    return {key: tuple(value) if isinstance(value, list) else value for key, value in out.items()}
