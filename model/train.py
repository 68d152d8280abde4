"""Single-run trainer: `train(cfg, run_dir)` trains one JEPA and writes everything under run_dir.

    run_dir/config.yaml        the resolved config (every key)
    run_dir/metrics.jsonl      one line per epoch, keys below
    run_dir/tb/                TensorBoard events with the same scalars
    run_dir/checkpoint/        state.pt of the last finished epoch (resumed from if present)
    run_dir/status.json        final status: completed | early_stopped | diverged
    run_dir/timing.json        this process's start-up, as wall-clock times (time.time()): called,
                               data_ready, model_ready, first_step (written after its first epoch)

Per-epoch keys: epoch, step, train/loss, train/lr (the epoch's last step's learning rate),
val/loss, val/loss_reference (the val loss under the fixed REFERENCE_WEIGHTS of model/jepa.py,
comparable across configs whose loss weights differ), loss/infonce, loss/sigreg, loss/relational,
loss/vq, codebook/usage, codebook/perplexity, codebook/refreshed, rank/context, rank/target,
isotropy/context, isotropy/target, grad/norm_mean, grad/norm_max, temperature, time/epoch_s,
time/train_s (inside training steps: batch building, forward, backward, optimiser, EMA, refresh),
time/eval_s (val loss and health metrics), codes/nmi_colour, codes/nmi_shape, codes/nmi_chance
(do the codes name objects: train.code_quality). Usage, perplexity, ranks, isotropy and the
code NMIs are measured on the val split once per epoch.
loss/infonce and loss/sigreg are unweighted; loss/relational is the weighted sum of its two
terms (weight, context_self_weight) and loss/vq includes the commitment cost, as they enter
train/loss = infonce + sigreg_weight * sigreg + relational + vq.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from model.config import TrainConfig, dump_config
from model.data import ArcData, iterate_batches, load_arc_data, make_examples
from model.io import atomic_path, atomic_write_json, atomic_write_text
from model.jepa import JEPA, REFERENCE_WEIGHTS, LossWeights, jepa_loss
from model.metrics import codebook_usage, effective_rank, isotropy, normalized_mutual_information, perplexity
from model.objects import shape_class
from model.quantizers import build_quantizer

METRIC_KEYS = (
    "epoch", "step", "train/loss", "train/lr", "val/loss", "val/loss_reference", "loss/infonce", "loss/sigreg", "loss/relational",
    "loss/vq", "codebook/usage", "codebook/perplexity", "codebook/refreshed", "rank/context",
    "rank/target", "isotropy/context", "isotropy/target", "grad/norm_mean", "grad/norm_max",
    "temperature", "time/epoch_s", "time/train_s", "time/eval_s",
    "codes/nmi_colour", "codes/nmi_shape", "codes/nmi_chance",
)

EpochCallback = Callable[[dict, Path, bool], None]  # (metrics, checkpoint dir, last epoch?)
ExtraScalars = Callable[[dict, bool], dict[str, float]]  # (epoch metrics, final) -> more scalars for TensorBoard


@dataclass
class RunResult:
    status: str  # completed | early_stopped | diverged
    epochs: int  # epochs finished (with a checkpoint)
    history: list[dict] = field(default_factory=list)


def build_model(cfg: TrainConfig) -> JEPA:
    m, vq, loss = cfg.model, cfg.vq, cfg.loss
    gumbel = {"temperature_start": vq.gumbel_temperature_start, "temperature_min": vq.gumbel_temperature_min,
              "anneal_rate": vq.gumbel_anneal_rate, "kl_weight": vq.gumbel_kl_weight}
    quantizer = (build_quantizer(vq.kind, m.dim, vq.num_codes, vq.commitment_cost, vq.ema_decay, vq.epsilon,
                                 vq.refresh_usage_threshold, vq.init, vq.cosine, vq.estimator, gumbel,
                                 vq.fsq_levels, seed=cfg.seed) if vq.enabled else None)
    return JEPA(m.dim, m.depth, m.heads, m.predictor_hidden, m.aggregator, cfg.data.context_length,
                quantizer, loss.temperature_init, loss.temperature_min, loss.temperature_max,
                final_norm=m.final_norm, encoder_layout=m.encoder_layout)


def make_optimizer(model: JEPA, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; decay on matrices only (not biases, norms, embeddings' scale or the temperature).
    fused: one kernel per parameter for the whole update (CPU and CUDA), the same rule as the
    per-tensor loop up to float rounding."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True)


def learning_rate(step: int, total_steps: int, lr: float, schedule: str, warmup_steps: int,
                  final_fraction: float) -> float:
    """The learning rate of optimisation step `step` (0-based) of a run of `total_steps` steps.

    Warmup (steps 0 .. W-1, W = warmup_steps):  lr_t = lr * (t + 1) / W
    then constant:                               lr_t = lr
    or cosine (I-JEPA, src/utils/schedulers.py: WarmupCosineSchedule; Loshchilov & Hutter 2017,
    SGDR eq. 5 without restarts), with progress p = (t - W) / max(1, T - 1 - W) in [0, 1]:
        lr_t = lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,   lr_min = final_fraction * lr
    so the first step after warmup has lr and the run's last step (T - 1) has lr_min. A pure
    function of the step: a resumed run continues the schedule without saving any state."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    lr_min = final_fraction * lr
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_weights(cfg: TrainConfig) -> LossWeights:
    """The loss's weights from the config (train() and the benches)."""
    return LossWeights(cfg.loss.sigreg_weight, cfg.loss.sigreg_directions, cfg.relational_loss.weight,
                       cfg.relational_loss.context_self_weight, cfg.relational_loss.reduction)


LOSS_TERMS = ("total", "infonce", "sigreg", "relational", "vq")


def train_step(model: JEPA, optimizer: torch.optim.Optimizer, batch, weights: LossWeights,
               sigreg_generator: torch.Generator, max_norm: float, momentum: float) -> dict[str, torch.Tensor]:
    """One optimisation step: the step train() runs and bench/train_throughput.py times.
    Returns the loss terms (LOSS_TERMS) and the gradient norm before clipping ("grad_norm") as
    detached tensors on the model's device. Nothing here reads a value back to the host, so a GPU
    never waits on it: the caller reads the step's values once an epoch, and a non-finite loss is
    found there (train: the epoch's first non-finite step)."""
    # ---- forward
    out = model(batch)
    terms = jepa_loss(model, out, weights, sigreg_generator)
    # ---- backward (gradient norm measured before clipping)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    # ---- EMA update of the target encoder
    model.update_target(momentum)
    return {**{k: terms[k].detach() for k in LOSS_TERMS}, "grad_norm": grad_norm.detach()}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: JEPA, data: ArcData, val_examples: tuple[torch.Tensor, torch.Tensor],
             weights: LossWeights, batch_size: int, device: torch.device, seed: int,
             num_codes: int) -> dict[str, float]:
    """Val loss and health metrics over the whole val split (no augmentation, fixed SIGReg draws).

    "val/loss" is the run's own weighted loss; "val/loss_reference" the same predictions scored
    with the fixed REFERENCE_WEIGHTS (model/jepa.py) and the same SIGReg draws, so val losses of
    configs with different loss weights compare (equal to val/loss when the weights are those)."""
    model.eval()
    generator, reference_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    same_weights = weights == REFERENCE_WEIGHTS
    total, reference, count, contexts, targets, codes, colours, shapes = 0.0, 0.0, 0, [], [], [], [], []
    for batch in iterate_batches(data.records, *val_examples, batch_size, device):
        out = model(batch)
        own = float(jepa_loss(model, out, weights, generator)["total"])
        total += own * batch.size
        reference += (own if same_weights else
                      float(jepa_loss(model, out, REFERENCE_WEIGHTS, reference_generator)["total"])) * batch.size
        count += batch.size
        contexts.append(out.context)
        targets.append(out.target)
        if out.indices is not None:
            codes.append(out.indices)
            m = batch.context_packing.num_tokens  # the context tokens, in the order of the codes
            colours.append(batch.colours[:m])
            shapes.append(shape_class(batch.features[:m], batch.colours[:m]))
    model.train()
    context, target = torch.cat(contexts), torch.cat(targets)
    indices = torch.cat(codes) if codes else None
    nmi = code_quality(indices, torch.cat(colours), torch.cat(shapes), seed) if codes else {}
    return {
        "val/loss": total / count,
        "val/loss_reference": reference / count,
        "codebook/usage": codebook_usage(indices, num_codes) if indices is not None else math.nan,
        "codebook/perplexity": perplexity(indices, num_codes) if indices is not None else math.nan,
        "rank/context": effective_rank(context),
        "rank/target": effective_rank(target),
        "isotropy/context": isotropy(context),
        "isotropy/target": isotropy(target),
        "codes/nmi_colour": nmi.get("colour", math.nan),
        "codes/nmi_shape": nmi.get("shape", math.nan),
        "codes/nmi_chance": nmi.get("chance", math.nan),
    }


def code_quality(indices: torch.Tensor, colours: torch.Tensor, shapes: torch.Tensor, seed: int) -> dict[str, float]:
    """Do the codes name objects? NMI between each context token's code and its colour, and its
    shape class (model/objects.py: shape_class); "chance": NMI between the codes and the colours
    shuffled across tokens (a fixed permutation from `seed`), the level a code-colour NMI must
    clear to mean anything."""
    codes, colours, shapes = indices.cpu(), colours.cpu(), shapes.cpu()
    shuffled = colours[torch.randperm(len(colours), generator=torch.Generator().manual_seed(seed))]
    return {"colour": normalized_mutual_information(codes, colours),
            "shape": normalized_mutual_information(codes, shapes),
            "chance": normalized_mutual_information(codes, shuffled)}


def _format_line(m: dict, epochs: int) -> str:
    usage = m["codebook/usage"]
    usage_text = "   n/a" if math.isnan(usage) else f"{100 * usage:5.1f}%"
    return (f"epoch {m['epoch']:3d}/{epochs} | train {m['train/loss']:.4f} | val {m['val/loss']:.4f} | "
            f"usage {usage_text} | rank ctx {m['rank/context']:5.1f} tgt {m['rank/target']:5.1f} | "
            f"iso {m['isotropy/context']:.3f}/{m['isotropy/target']:.3f} | "
            f"grad {m['grad/norm_mean']:.2f}/{m['grad/norm_max']:.2f} | tau {m['temperature']:.3f} | "
            f"{m['time/epoch_s']:.1f}s")


@dataclass
class TrainingRun:
    """One run between its epochs: built once by start_run, advanced by train_epoch and end_epoch,
    closed by finish_run. `state` is what the checkpoint saves (epoch, step, best_val, bad_epochs,
    history, and status once the run has ended); the rest is rebuilt from the config."""

    cfg: TrainConfig
    run_dir: Path
    checkpoint_dir: Path
    device: torch.device
    weights: LossWeights
    data: ArcData
    val_examples: tuple[torch.Tensor, torch.Tensor]  # ([E, k], [E]) grid ids, fixed for the run
    model: JEPA
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]  # examples, shuffle, augment, sigreg, refresh
    state: dict
    timing: dict  # wall-clock times of this process's start-up (timing.json)
    writer: object | None = None  # TensorBoard SummaryWriter, None once the run has ended
    first_epoch_here: int = 1  # timing.json is written after it

    @property
    def history(self) -> list[dict]:
        return self.state["history"]

    @property
    def ended(self) -> bool:
        """Has the run ended early (early stopped or diverged)? Also true of a run resumed from
        the checkpoint of one that had."""
        return self.state.get("status") in ("early_stopped", "diverged")


def start_run(cfg: TrainConfig, run_dir: Path, checkpoint_dir: Path | None = None, hparams: dict | None = None,
              log: Callable[[str], None] = print) -> TrainingRun:
    """Everything a run needs before its first step, built once: the resolved config on disk, the
    data, the model, the optimiser and the random streams (from the checkpoint if there is one),
    metrics.jsonl (rewritten from the checkpoint's history) and the TensorBoard writer."""
    timing = {"called": time.time()}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    t = cfg.training
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)

    # ---- data: real ARC tasks, split by task id; val examples fixed for the whole run
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    val_examples = make_examples(data.val_tasks, cfg.data.context_length,
                                 torch.Generator().manual_seed(cfg.seed + 1))
    timing["data_ready"] = time.time()

    # ---- model, optimizer and the run's random streams (explicit generators, all checkpointed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    generators = {name: torch.Generator().manual_seed(cfg.seed * 1000 + i)
                  for i, name in enumerate(("examples", "shuffle", "augment", "sigreg", "refresh"))}
    state = {"epoch": 0, "step": 0, "best_val": math.inf, "bad_epochs": 0, "history": []}

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "checkpoint"
    checkpoint = checkpoint_dir / "state.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for name, g in generators.items():
            g.set_state(saved["generators"][name])
        state = saved["state"]
        log(f"resumed from {checkpoint} after epoch {state['epoch']}")
    timing["model_ready"] = time.time()
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in state["history"]))
    run = TrainingRun(cfg, run_dir, checkpoint_dir, device, loss_weights(cfg), data, val_examples, model,
                      optimizer, generators, state, timing, first_epoch_here=state["epoch"] + 1)
    if not run.ended:
        from torch.utils.tensorboard import SummaryWriter  # lazy: ~1 s import

        run.writer = SummaryWriter(str(run_dir / "tb"), purge_step=state["epoch"] + 1)
        if hparams is not None and state["epoch"] == 0:  # before any scalar: step 0 never goes backwards
            _declare_hparams(run.writer, hparams)
    return run


def train_epoch(run: TrainingRun, log: Callable[[str], None] = print) -> dict | None:
    """One epoch: its training steps, then val loss and health metrics. Returns the epoch's
    metrics (METRIC_KEYS), or None if the run diverged (state["status"] set, the reason logged);
    the run's state is advanced by end_epoch, not here (apart from the step count)."""
    cfg, t, state, generators, model = run.cfg, run.cfg.training, run.state, run.generators, run.model
    steps_per_epoch = max(1, cfg.data.augment_copies * sum(len(p) for p in run.data.train_tasks) // t.batch_size)
    total_steps = t.epochs * steps_per_epoch
    m0, m1 = cfg.model.ema_momentum_start, cfg.model.ema_momentum_end
    warmup_steps = round(t.warmup_epochs * steps_per_epoch)
    epoch = state["epoch"] + 1
    started = time.perf_counter()
    steps: list[dict[str, torch.Tensor]] = []  # the epoch's step values, read once at its end
    refreshed = 0
    copies = [make_examples(run.data.train_tasks, cfg.data.context_length, generators["examples"])
              for _ in range(cfg.data.augment_copies)]
    train_examples = (torch.cat([ctx for ctx, _ in copies]), torch.cat([tgt for _, tgt in copies]))
    augment_with = generators["augment"] if cfg.data.augment else None
    first_step = state["step"]
    for batch in iterate_batches(run.data.records, *train_examples, t.batch_size, run.device,
                                 shuffle=generators["shuffle"], augment_with=augment_with, drop_last=True):
        run.timing.setdefault("first_step", time.time())
        # ---- forward, backward, clip, AdamW (lr from its schedule), EMA (momentum rising linearly m0 -> m1)
        lr = learning_rate(state["step"], total_steps, t.lr, t.lr_schedule, warmup_steps, t.final_lr_fraction)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        momentum = m0 + (m1 - m0) * min(1.0, (state["step"] + 1) / total_steps)
        steps.append(train_step(model, run.optimizer, batch, run.weights, generators["sigreg"],
                                t.grad_clip.max_norm, momentum))
        state["step"] += 1
        # ---- dead-code refresh (reads the step back: never on a diverged codebook)
        if model.quantizer is not None and cfg.vq.refresh_enabled and state["step"] % cfg.vq.refresh_interval == 0:
            if not bool(torch.isfinite(steps[-1]["total"]) & torch.isfinite(steps[-1]["grad_norm"])):
                break
            refreshed += model.quantizer.refresh_dead_codes(generators["refresh"])

    # ---- the epoch's step values, read once; a non-finite step ends the run as diverged
    values = {k: torch.stack([s[k] for s in steps]).tolist() if steps else [] for k in (*LOSS_TERMS, "grad_norm")}
    bad = next((i for i, (loss, norm) in enumerate(zip(values["total"], values["grad_norm"]))
                if not (math.isfinite(loss) and math.isfinite(norm))), None)
    if bad is not None:
        shown = ", ".join(f"{k}={v[bad]:.4g}" for k, v in values.items())
        log(f"diverged at epoch {epoch} step {first_step + bad + 1}: {shown}; "
            f"last good checkpoint: epoch {state['epoch']} in {run.checkpoint_dir}")
        state["status"] = "diverged"
        return None
    sums = {k: sum(values[k]) for k in LOSS_TERMS}
    grad_norms = values["grad_norm"]

    # ---- end of epoch: val loss and health metrics
    train_s = time.perf_counter() - started
    n = max(1, len(grad_norms))
    metrics = {"epoch": epoch, "step": state["step"], "train/loss": sums["total"] / n,
               "train/lr": run.optimizer.param_groups[0]["lr"]}
    num_codes = model.quantizer.num_codes if model.quantizer is not None else 0
    metrics.update(evaluate(model, run.data, run.val_examples, run.weights, t.batch_size, run.device,
                            cfg.seed, num_codes))
    metrics.update({
        "loss/infonce": sums["infonce"] / n, "loss/sigreg": sums["sigreg"] / n,
        "loss/relational": sums["relational"] / n, "loss/vq": sums["vq"] / n,
        "codebook/refreshed": refreshed,
        "grad/norm_mean": sum(grad_norms) / n, "grad/norm_max": max(grad_norms, default=0.0),
        "temperature": float(model.temperature().detach()),
        "time/epoch_s": time.perf_counter() - started,
        "time/train_s": train_s,
    })
    metrics["time/eval_s"] = metrics["time/epoch_s"] - train_s
    metrics = {k: metrics[k] for k in METRIC_KEYS}
    if not math.isfinite(metrics["val/loss"]):
        log(f"diverged at epoch {epoch}: val/loss={metrics['val/loss']}; "
            f"last good checkpoint: epoch {state['epoch']} in {run.checkpoint_dir}")
        state["status"] = "diverged"
        return None
    return metrics


def end_epoch(run: TrainingRun, metrics: dict, extra_scalars: ExtraScalars | None = None,
              log: Callable[[str], None] = print) -> bool:
    """Early stopping bookkeeping, then the checkpoint, then the epoch's logs (metrics.jsonl,
    TensorBoard with the caller's extra scalars, the console line). Returns True on the run's
    last epoch (its max epochs, or an early stop)."""
    state, t = run.state, run.cfg.training
    # ---- early stopping: patience epochs without a val/loss improvement of min_delta
    if metrics["val/loss"] < state["best_val"] - t.early_stopping.min_delta:
        state["best_val"], state["bad_epochs"] = metrics["val/loss"], 0
    else:
        state["bad_epochs"] += 1
    # (on the run's last epoch there is nothing left to stop: a run that reaches it is completed)
    stop = (t.early_stopping.patience is not None and state["bad_epochs"] >= t.early_stopping.patience
            and metrics["epoch"] < t.epochs)
    state["epoch"] = metrics["epoch"]
    state["history"].append(metrics)
    if stop:
        state["status"] = "early_stopped"
    # ---- checkpoint, then logs: a run killed in between resumes with nothing logged twice
    _save_checkpoint(run.checkpoint_dir, run.model, run.optimizer, run.generators, state)
    if metrics["epoch"] == run.first_epoch_here:
        atomic_write_json(run.run_dir / "timing.json", run.timing)
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")
    final = stop or metrics["epoch"] == t.epochs
    extra = extra_scalars(metrics, final) if extra_scalars is not None else {}
    for key, value in {**metrics, **extra}.items():
        if key != "epoch" and math.isfinite(value):
            run.writer.add_scalar(key, value, metrics["epoch"])
    run.writer.flush()
    log(_format_line(metrics, t.epochs))
    if stop:
        log(f"early stop: val/loss has not improved for {t.early_stopping.patience} epochs "
            f"(best {state['best_val']:.4f})")
    return final


def finish_run(run: TrainingRun) -> RunResult:
    """Close the TensorBoard writer and write status.json: completed, early_stopped or diverged."""
    if run.writer is not None:
        run.writer.close()
        run.writer = None
    status = run.state.get("status", "completed")
    atomic_write_json(run.run_dir / "status.json", {"status": status, "epochs": run.state["epoch"],
                                                    "best_val_loss": run.state["best_val"]})
    return RunResult(status, run.state["epoch"], run.history)


def train(cfg: TrainConfig, run_dir: Path, on_epoch: EpochCallback | None = None,
          log: Callable[[str], None] = print, checkpoint_dir: Path | None = None,
          extra_scalars: ExtraScalars | None = None, hparams: dict | None = None) -> RunResult:
    """Train (or resume) one run. on_epoch(metrics, checkpoint_dir, final) runs after each epoch's
    checkpoint and logs; final is True on the run's last epoch (max epochs or early stop).
    checkpoint_dir defaults to run_dir/checkpoint (the Ray adapter keeps it out of the synced
    trial folder, since Ray stores the reported checkpoints itself).
    TensorBoard has one writer, so one run: extra_scalars(metrics, final) adds scalars of the caller's
    (the search's score) beside each epoch's metrics, and `hparams` (name -> value) are declared
    once, at a fresh start, for TensorBoard's HParams view with HPARAM_METRICS as its metrics."""
    run = start_run(cfg, run_dir, checkpoint_dir, hparams, log)
    if run.ended:  # resumed from the checkpoint of a run that had already ended
        return RunResult(run.state["status"], run.state["epoch"], run.history)
    try:
        while run.state["epoch"] < cfg.training.epochs:
            metrics = train_epoch(run, log)
            if metrics is None:  # diverged
                break
            final = end_epoch(run, metrics, extra_scalars, log)
            if on_epoch is not None:
                on_epoch(metrics, run.checkpoint_dir, final)
            if final:
                break
    finally:
        if run.writer is not None:  # also on an exception from a callback
            run.writer.close()
            run.writer = None
    return finish_run(run)


HPARAM_METRICS = ("score", "codebook/usage", "rank/context", "rank/target", "val/loss", "val/loss_reference",
                  "codes/nmi_colour")


def _declare_hparams(writer, hparams: dict) -> None:
    """The run's parameters in TensorBoard's HParams view; its metrics are this run's scalars."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    shown = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    experiment, session_start, _ = hparams_summary(shown, {m: math.nan for m in HPARAM_METRICS})
    for summary in (experiment, session_start):
        writer.file_writer.add_summary(summary)


def _save_checkpoint(directory: Path, model: JEPA, optimizer, generators: dict, state: dict) -> None:
    """Write state.pt atomically: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(directory / "state.pt") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generators": {k: g.get_state() for k, g in generators.items()}, "state": state}, tmp)
