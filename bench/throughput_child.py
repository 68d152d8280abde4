#!/usr/bin/env python
"""One row of bench/train_throughput.py, in its own process, on the code of a given tree.

    python bench/throughput_child.py '{"root": "/path/to/tree", "config": "configs/stable_production.yaml",
                                       "overrides": ["model.dim=128"], "threads": 1, "steps": 30,
                                       "profile_steps": 10}'

Imports `model` from `root` (this repository, or a reference commit checked out with git
worktree), so it uses only what the trainer has offered since the length-bucketed encoder:
load_config, load_arc_data, make_examples, make_batch, build_model, make_optimizer,
loss_weights and train_step. Times `steps` training steps after 3 warm-up steps, each step as
a search's trial runs it (gather and augment the batch, then model/train.py's train_step:
forward, backward, clip, AdamW, EMA update); with "prefetch": true, each batch is built one
step ahead in a Python thread while the step runs (batch building then has no share of its
own: NaN). Prints one JSON line:

    samples_per_s, ms_per_step, batch_share (batch building's share of a step),
    flops_per_sample (torch.utils.flop_counter over one train_step: forward and backward),
    matmul_flops_per_s (a 2048 x 2048 fp32 matmul in this process, at these threads),
    ops (with profile_steps: {op: [self ms per step, calls per step]} from torch.profiler)
"""

from __future__ import annotations

import json
import math
import queue
import sys
import threading
import time


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def measure(root: str, config: str, overrides: list[str], threads: int, steps: int, profile_steps: int = 0,
            prefetch: bool = False) -> dict:
    sys.path.insert(0, root)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.config import load_config
    from model.data import load_arc_data, make_batch, make_examples
    from model.train import build_model, loss_weights, make_optimizer, train_step

    torch.set_num_threads(threads)
    cfg = load_config(f"{root}/{config}", overrides)
    data = load_arc_data(cfg.data.sources, cfg.data.val_fraction, cfg.data.max_objects, cfg.data.max_tasks)
    generator = torch.Generator().manual_seed(0)
    contexts, targets = make_examples(data.train_tasks, cfg.data.context_length, generator)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = make_optimizer(model, cfg.training.lr, cfg.training.weight_decay)
    weights, size, cpu = loss_weights(cfg), cfg.training.batch_size, torch.device("cpu")

    def batch(i: int):
        idx = torch.arange(i * size, (i + 1) * size) % len(targets)
        return make_batch(data.records, contexts[idx], targets[idx], generator if cfg.data.augment else None, cpu)

    def step(b) -> None:
        train_step(model, optimizer, b, weights, generator, cfg.training.grad_clip.max_norm, 0.996)

    for i in range(3):  # warm-up
        step(batch(i))
    batch_s = step_s = 0.0
    if prefetch:  # the next batch built in a Python thread while this step runs: one wall time for both
        ahead: queue.Queue = queue.Queue(maxsize=1)
        builder = threading.Thread(target=lambda: [ahead.put(batch(3 + i)) for i in range(steps)], daemon=True)
        t0 = time.perf_counter()
        builder.start()
        for _ in range(steps):
            step(ahead.get())
        step_s, batch_s = time.perf_counter() - t0, math.nan
    for i in range(0 if prefetch else steps):
        t0 = time.perf_counter()
        b = batch(3 + i)
        t1 = time.perf_counter()
        step(b)
        t2 = time.perf_counter()
        batch_s, step_s = batch_s + t1 - t0, step_s + t2 - t1
    total_s = step_s + (0.0 if prefetch else batch_s)
    with FlopCounterMode(display=False) as counter:
        step(batch(0))
    row = {"samples_per_s": steps * size / total_s, "ms_per_step": 1e3 * total_s / steps,
           "batch_share": batch_s / total_s, "flops_per_sample": counter.get_total_flops() / size,
           "matmul_flops_per_s": matmul_flops_per_s(), "ops": {}}
    if profile_steps:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(profile_steps):
                step(batch(i))
        row["ops"] = {e.key: [e.self_cpu_time_total / 1e3 / profile_steps, e.count / profile_steps]
                      for e in prof.key_averages()}
    return row


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(spec["root"], spec["config"], spec.get("overrides", []), spec["threads"], spec["steps"],
                             spec.get("profile_steps", 0), spec.get("prefetch", False))))
