"""Loss and error of a model on one split, optionally comparing its logits with other models.

In:  a model (put in eval mode), an ``ImageData``, a split ('train' or 'test'), a batch size and
     optionally other models to run on the same batches.
Out: ``EvalResult``: mean cross-entropy, top-1 / top-5 error in %, the largest |logit| of the
     model and, per compared model, the largest |logit difference| to it over the split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from claimbench.data.base import ImageData


@dataclass
class EvalResult:
    loss: float
    error: float  # top-1, %
    error_top5: float  # %, (top-min(5, classes))
    max_abs_logit: float
    max_abs_diff: list[float] = field(default_factory=list)  # one per compared model


def evaluate(
    model: nn.Module,
    data: ImageData,
    split: str,
    batch_size: int = 500,
    compare: tuple[nn.Module, ...] = (),
) -> EvalResult:
    """One unaugmented pass over ``split`` in eval mode, no gradients."""
    model.eval()
    for other in compare:
        other.eval()
    device = next(model.parameters()).device
    n, loss, wrong1, wrong5, max_logit = 0, 0.0, 0, 0, 0.0
    diffs = [0.0] * len(compare)
    with torch.no_grad():
        for x, y in data.eval_batches(split, batch_size):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            n += int(y.shape[0])
            loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            wrong1 += int((logits.argmax(dim=1) != y).sum())
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            wrong5 += int((~(top == y[:, None]).any(dim=1)).sum())
            max_logit = max(max_logit, float(logits.abs().max()))
            for j, other in enumerate(compare):
                other_logits = other(x.to(next(other.parameters()).device)).to(logits.device)
                diffs[j] = max(diffs[j], float((other_logits - logits).abs().max()))
    if n == 0:
        raise ValueError(f"split {split!r} of {data.name!r} is empty")
    return EvalResult(loss / n, 100.0 * wrong1 / n, 100.0 * wrong5 / n, max_logit, diffs)
