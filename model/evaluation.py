"""A JEPA's end-of-epoch evaluation on the val split: val loss and the health metrics.

Every metric is a pure function of tensors in model/metrics.py; this module only runs the model
over the val examples (no augmentation, fixed SIGReg draws) and gathers what they need.
"""

from __future__ import annotations

import math

import torch

from model.data import ArcData, iterate_batches
from model.jepa import JEPA, REFERENCE_WEIGHTS, LossWeights, jepa_loss
from model.metrics import codebook_usage, effective_rank, isotropy, normalized_mutual_information, perplexity
from model.objects import shape_class


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
