"""Single-run trainer: `train(cfg, run_dir)` trains one JEPA and writes everything under run_dir.

    run_dir/config.yaml        the resolved config (every key)
    run_dir/metrics.jsonl      one line per epoch, keys below (model/runlog.py)
    run_dir/tb/                TensorBoard events with the same scalars
    run_dir/checkpoint/        state.pt of the last finished epoch (resumed from if present)
    run_dir/status.json        final status: completed | early_stopped | diverged
    run_dir/timing.json        this process's start-up, as wall-clock times

Per-epoch keys: epoch, step, train/loss, train/lr (the epoch's last step's learning rate),
val/loss, val/loss_reference (the val loss under the fixed REFERENCE_WEIGHTS of model/jepa.py,
comparable across configs whose loss weights differ), loss/infonce, loss/sigreg, loss/relational,
loss/vq, codebook/usage, codebook/perplexity, codebook/refreshed, rank/context, rank/target,
isotropy/context, isotropy/target, grad/norm_mean, grad/norm_max, temperature, time/epoch_s,
time/train_s (inside training steps: batch building, forward, backward, optimiser, EMA, refresh),
time/eval_s (val loss and health metrics), codes/nmi_colour, codes/nmi_shape, codes/nmi_chance
(do the codes name objects: model/evaluation.py). Usage, perplexity, ranks, isotropy and the
code NMIs are measured on the val split once per epoch.
loss/infonce and loss/sigreg are unweighted; loss/relational is the weighted sum of its two
terms (weight, context_self_weight) and loss/vq includes the commitment cost, as they enter
train/loss = infonce + sigreg_weight * sigreg + relational + vq.

The run, top to bottom: start_run builds everything once (data, model, optimiser, the step
schedule, the random streams, the log); each epoch train_epoch gathers its examples, steps,
refreshes dead codes and records the epoch's values; end_epoch keeps the early-stopping count,
checkpoints and logs; finish_run writes the status. The trainer knows nothing of the search:
the Ray adapter hands it extra scalars and the hyperparameters to show (search/trainable.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from model.config import TrainConfig, dump_config
from model.data import ArcData, iterate_batches, load_arc_data, make_examples
from model.early_stopping import patience_step
from model.evaluation import evaluate
from model.io import atomic_path, atomic_write_json
from model.jepa import JEPA, JEPAConfig, LossWeights, jepa_loss
from model.quantizers import build_quantizer, options_of
from model.runlog import RunLog

# Every epoch's metrics, in the order metrics.jsonl lists them (a metric computed below and not
# named here is logged after these, never dropped; search/metrics.py says which the search judges).
METRIC_KEYS = (
    "epoch", "step", "train/loss", "train/lr", "val/loss", "val/loss_reference", "loss/infonce", "loss/sigreg", "loss/relational",
    "loss/vq", "codebook/usage", "codebook/perplexity", "codebook/refreshed", "rank/context",
    "rank/target", "isotropy/context", "isotropy/target", "grad/norm_mean", "grad/norm_max",
    "temperature", "time/epoch_s", "time/train_s", "time/eval_s",
    "codes/nmi_colour", "codes/nmi_shape", "codes/nmi_chance",
)

EpochCallback = Callable[[dict, Path, bool], None]  # (metrics, checkpoint dir, last epoch?)
ExtraScalars = Callable[[list[dict], bool], dict[str, float]]  # (history so far, final) -> more scalars for TensorBoard


# --------------------------------------------------------------------------------------------
# The parts: model, optimiser, loss weights, the step schedule, one optimisation step


def build_model(cfg: TrainConfig) -> JEPA:
    m, vq, loss = cfg.model, cfg.vq, cfg.loss
    quantizer = build_quantizer(vq.kind, m.dim, cfg.seed, **options_of(vq.kind, vq)) if vq.enabled else None
    return JEPA(JEPAConfig(dim=m.dim, depth=m.depth, heads=m.heads, predictor_hidden=m.predictor_hidden,
                           aggregator=m.aggregator, context_length=cfg.data.context_length,
                           temperature_init=loss.temperature_init, temperature_min=loss.temperature_min,
                           temperature_max=loss.temperature_max, final_norm=m.final_norm,
                           encoder_layout=m.encoder_layout, colour_init_std=m.colour_init_std), quantizer)


def make_optimizer(model: JEPA, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; decay on matrices only (not biases, norms, embeddings' scale or the temperature).
    fused: one kernel per parameter for the whole update (CPU and CUDA), the same rule as the
    per-tensor loop up to float rounding."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True)


def loss_weights(cfg: TrainConfig) -> LossWeights:
    """The loss's weights from the config (train() and the benches)."""
    return LossWeights(cfg.loss.sigreg_weight, cfg.loss.sigreg_directions, cfg.relational_loss.weight,
                       cfg.relational_loss.context_self_weight, cfg.relational_loss.reduction)


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


@dataclass(frozen=True)
class Schedule:
    """The run's step plan, fixed once its data is known: steps per epoch and in all, the learning
    rate of each step (learning_rate) and the EMA momentum of each step, rising linearly from
    momentum_start to momentum_end over the run (I-JEPA, Sec. 3)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float
    kind: str  # constant | cosine
    final_fraction: float
    momentum_start: float
    momentum_end: float

    @classmethod
    def of(cls, cfg: TrainConfig, train_examples: int) -> "Schedule":
        t = cfg.training
        per_epoch = max(1, cfg.data.augment_copies * train_examples // t.batch_size)  # full batches only
        return cls(per_epoch, t.epochs * per_epoch, round(t.warmup_epochs * per_epoch), t.lr, t.lr_schedule,
                   t.final_lr_fraction, cfg.model.ema_momentum_start, cfg.model.ema_momentum_end)

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, self.total_steps, self.lr, self.kind, self.warmup_steps, self.final_fraction)

    def momentum(self, step: int) -> float:
        """m_t = m_0 + (m_1 - m_0) * min(1, (t + 1) / T)."""
        return self.momentum_start + (self.momentum_end - self.momentum_start) * min(1.0, (step + 1) / self.total_steps)


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


# --------------------------------------------------------------------------------------------
# A run: built once, advanced epoch by epoch


@dataclass
class RunState:
    """What a checkpoint saves besides the model, optimiser and random streams."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimisation steps taken
    best_val: float = math.inf  # lowest val/loss so far (early stopping)
    bad_epochs: int = 0  # epochs counted against the run (model/early_stopping.py)
    history: list[dict] = field(default_factory=list)  # every finished epoch's metrics
    status: str | None = None  # early_stopped | diverged once the run has ended early


@dataclass
class RunResult:
    status: str  # completed | early_stopped | diverged
    epochs: int  # epochs finished (with a checkpoint)
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainingRun:
    """One run between its epochs: built once by start_run, advanced by train_epoch and end_epoch,
    closed by finish_run."""

    cfg: TrainConfig
    run_dir: Path
    checkpoint_dir: Path
    device: torch.device
    weights: LossWeights
    data: ArcData
    val_examples: tuple[torch.Tensor, torch.Tensor]  # ([E, k], [E]) grid ids, fixed for the run
    model: JEPA
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generators: dict[str, torch.Generator]  # examples, shuffle, augment, sigreg, refresh
    state: RunState
    logbook: RunLog

    @property
    def history(self) -> list[dict]:
        return self.state.history

    @property
    def ended(self) -> bool:
        """Has the run ended early (early stopped or diverged)? Also true of a run resumed from
        the checkpoint of one that had."""
        return self.state.status in ("early_stopped", "diverged")


GENERATORS = ("examples", "shuffle", "augment", "sigreg", "refresh")  # the run's random streams, seeded cfg.seed * 1000 + i


def start_run(cfg: TrainConfig, run_dir: Path, checkpoint_dir: Path | None = None, hparams: dict | None = None,
              hparam_metrics: tuple[str, ...] = (), log: Callable[[str], None] = print) -> TrainingRun:
    """Everything a run needs before its first step, built once: the resolved config on disk, the
    data, the model, the optimiser, the schedule and the random streams (from the checkpoint if
    there is one), and the run's log (metrics.jsonl rewritten from the checkpoint's history,
    TensorBoard with `hparams` at a fresh start)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "checkpoint"
    started = time.time()
    dump_config(cfg, run_dir / "config.yaml")
    t = cfg.training
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)

    # ---- data: real ARC tasks, split by task id; val examples fixed for the whole run
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    val_examples = make_examples(data.val_tasks, cfg.data.context_length, torch.Generator().manual_seed(cfg.seed + 1))
    data_ready = time.time()

    # ---- model, optimizer, schedule and the run's random streams (explicit generators, all checkpointed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model, t.lr, t.weight_decay)
    schedule = Schedule.of(cfg, sum(len(pairs) for pairs in data.train_tasks))
    generators = {name: torch.Generator().manual_seed(cfg.seed * 1000 + i) for i, name in enumerate(GENERATORS)}
    state = RunState()
    checkpoint = checkpoint_dir / "state.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for name, g in generators.items():
            g.set_state(saved["generators"][name])
        state = RunState(**saved["state"])
        log(f"resumed from {checkpoint} after epoch {state.epoch}")

    # ---- the run's log: metrics.jsonl, TensorBoard, the console, timing.json
    logbook = RunLog(run_dir, t.epochs, state.history, log)
    logbook.timing.update(called=started, data_ready=data_ready)
    logbook.mark("model_ready")
    run = TrainingRun(cfg, run_dir, checkpoint_dir, device, loss_weights(cfg), data, val_examples, model, optimizer,
                      schedule, generators, state, logbook)
    if not run.ended:
        logbook.open_tensorboard(hparams, hparam_metrics)
    return run


def train_epoch(run: TrainingRun, log: Callable[[str], None] = print) -> dict | None:
    """One epoch: gather its examples, step through them, refresh dead codes, record the epoch.
    Returns the epoch's metrics (METRIC_KEYS), or None if the run diverged (state.status set,
    the reason logged); the run's state is advanced by end_epoch, not here (apart from the step
    count)."""
    cfg, state, generators, model, schedule = run.cfg, run.state, run.generators, run.model, run.schedule
    epoch, first_step, started = state.epoch + 1, state.step, time.perf_counter()

    # ---- gather: augment_copies draws of each task's contexts, shuffled, augmented, in full batches
    copies = [make_examples(run.data.train_tasks, cfg.data.context_length, generators["examples"])
              for _ in range(cfg.data.augment_copies)]
    examples = (torch.cat([ctx for ctx, _ in copies]), torch.cat([tgt for _, tgt in copies]))
    batches = iterate_batches(run.data.records, *examples, cfg.training.batch_size, run.device,
                              shuffle=generators["shuffle"], augment_with=generators["augment"] if cfg.data.augment else None,
                              drop_last=True)
    steps: list[dict[str, torch.Tensor]] = []  # the epoch's step values, read once at its end
    refreshed = 0
    for batch in batches:
        run.logbook.mark("first_step")
        # ---- step: forward, backward, clip, AdamW at the schedule's learning rate, EMA at its momentum
        for group in run.optimizer.param_groups:
            group["lr"] = schedule.learning_rate(state.step)
        steps.append(train_step(model, run.optimizer, batch, run.weights, generators["sigreg"],
                                cfg.training.grad_clip.max_norm, schedule.momentum(state.step)))
        state.step += 1
        # ---- refresh: dead codes, every refresh_interval steps (reads the step back: never on a diverged codebook)
        if model.quantizer is not None and cfg.vq.refresh_enabled and state.step % cfg.vq.refresh_interval == 0:
            if not bool(torch.isfinite(steps[-1]["total"]) & torch.isfinite(steps[-1]["grad_norm"])):
                break
            refreshed += model.quantizer.refresh_dead_codes(generators["refresh"])

    # ---- record: the epoch's step values, read once (a non-finite step ends the run as diverged),
    # then val loss and the health metrics
    values = {k: torch.stack([s[k] for s in steps]).tolist() if steps else [] for k in (*LOSS_TERMS, "grad_norm")}
    bad = next((i for i, (loss, norm) in enumerate(zip(values["total"], values["grad_norm"]))
                if not (math.isfinite(loss) and math.isfinite(norm))), None)
    if bad is not None:
        shown = ", ".join(f"{k}={v[bad]:.4g}" for k, v in values.items())
        return _diverged(run, f"diverged at epoch {epoch} step {first_step + bad + 1}: {shown}", log)
    train_s = time.perf_counter() - started
    n = max(1, len(values["total"]))
    num_codes = model.quantizer.num_codes if model.quantizer is not None else 0
    metrics = {"epoch": epoch, "step": state.step, "train/loss": sum(values["total"]) / n,
               "train/lr": run.optimizer.param_groups[0]["lr"],
               **evaluate(model, run.data, run.val_examples, run.weights, cfg.training.batch_size, run.device,
                          cfg.seed, num_codes),
               **{f"loss/{k}": sum(values[k]) / n for k in ("infonce", "sigreg", "relational", "vq")},
               "codebook/refreshed": refreshed,
               "grad/norm_mean": sum(values["grad_norm"]) / n, "grad/norm_max": max(values["grad_norm"], default=0.0),
               "temperature": float(model.temperature().detach()),
               "time/epoch_s": time.perf_counter() - started, "time/train_s": train_s}
    metrics["time/eval_s"] = metrics["time/epoch_s"] - train_s
    if not math.isfinite(metrics["val/loss"]):
        return _diverged(run, f"diverged at epoch {epoch}: val/loss={metrics['val/loss']}", log)
    return {**{k: metrics[k] for k in METRIC_KEYS}, **metrics}  # METRIC_KEYS' order first; nothing dropped


def _diverged(run: TrainingRun, why: str, log: Callable[[str], None]) -> None:
    log(f"{why}; last good checkpoint: epoch {run.state.epoch} in {run.checkpoint_dir}")
    run.state.status = "diverged"
    return None


def end_epoch(run: TrainingRun, metrics: dict, extra_scalars: ExtraScalars | None = None,
              log: Callable[[str], None] = print) -> bool:
    """Early stopping bookkeeping, then the checkpoint, then the epoch's log (metrics.jsonl,
    TensorBoard with the caller's extra scalars, the console line). Returns True on the run's
    last epoch (its max epochs, or an early stop)."""
    state, t = run.state, run.cfg.training
    # ---- early stopping: patience epochs neither a new best nor on the val-loss floor (model/early_stopping.py)
    es = t.early_stopping
    state.best_val, state.bad_epochs = patience_step(state.best_val, state.bad_epochs, metrics["val/loss"],
                                                     es.min_delta, es.floor_tolerance)
    # (on the run's last epoch there is nothing left to stop: a run that reaches it is completed)
    stop = (t.early_stopping.patience is not None and state.bad_epochs >= t.early_stopping.patience
            and metrics["epoch"] < t.epochs)
    state.epoch = metrics["epoch"]
    state.history.append(metrics)
    if stop:
        state.status = "early_stopped"
    # ---- checkpoint, then logs: a run killed in between resumes with nothing logged twice
    save_checkpoint(run)
    final = stop or metrics["epoch"] == t.epochs
    run.logbook.epoch(metrics, (lambda: extra_scalars(state.history, final)) if extra_scalars is not None else None)
    if stop:
        log(f"early stop: val/loss neither improved nor came within {100 * es.floor_tolerance:g}% of its best "
            f"for {es.patience} epochs (best {state.best_val:.4f})")
    return final


def finish_run(run: TrainingRun) -> RunResult:
    """Close the log and write status.json: completed, early_stopped or diverged."""
    run.logbook.close()
    status = run.state.status or "completed"
    atomic_write_json(run.run_dir / "status.json", {"status": status, "epochs": run.state.epoch,
                                                    "best_val_loss": run.state.best_val})
    return RunResult(status, run.state.epoch, run.history)


def train(cfg: TrainConfig, run_dir: Path, on_epoch: EpochCallback | None = None,
          log: Callable[[str], None] = print, checkpoint_dir: Path | None = None,
          extra_scalars: ExtraScalars | None = None, hparams: dict | None = None,
          hparam_metrics: tuple[str, ...] = ()) -> RunResult:
    """Train (or resume) one run. on_epoch(metrics, checkpoint_dir, final) runs after each epoch's
    checkpoint and logs; final is True on the run's last epoch (max epochs or early stop).
    checkpoint_dir defaults to run_dir/checkpoint (the Ray adapter keeps it out of the synced
    trial folder, since Ray stores the reported checkpoints itself). extra_scalars(history, final)
    adds the caller's scalars (the search's score, computed from the run's history in memory, this
    epoch's metrics last) beside each epoch's metrics in TensorBoard;
    `hparams` (name -> value) are declared once, at a fresh start, for TensorBoard's HParams view
    with `hparam_metrics` (scalar names) as its metrics."""
    run = start_run(cfg, run_dir, checkpoint_dir, hparams, hparam_metrics, log)
    if run.ended:  # resumed from the checkpoint of a run that had already ended
        run.logbook.close()
        return RunResult(run.state.status, run.state.epoch, run.history)
    try:
        while run.state.epoch < cfg.training.epochs:
            metrics = train_epoch(run, log)
            if metrics is None:  # diverged
                break
            final = end_epoch(run, metrics, extra_scalars, log)
            if on_epoch is not None:
                on_epoch(metrics, run.checkpoint_dir, final)
            if final:
                break
    finally:
        run.logbook.close()  # also on an exception from a callback
    return finish_run(run)


def save_checkpoint(run: TrainingRun) -> None:
    """Write state.pt atomically: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(run.checkpoint_dir / "state.pt") as tmp:
        torch.save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                    "generators": {k: g.get_state() for k, g in run.generators.items()},
                    "state": asdict(run.state)}, tmp)
