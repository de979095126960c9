"""The ``smoothsgd`` training loop: SGD with Nesterov momentum on label-smoothed cross-entropy.

It reads ``train.batch_size`` and ``train.phases`` (steps: ``run.total_steps``; the learning rate
is divided by 10 at the start of each later phase, as in claimbench's own loop) and its own fields;
the ``optim`` section is not its business. Data order comes from torch's global generator, which
claimbench has seeded with ``train.seed``, so a CPU run is repeatable. Not resumable: an interrupted
run starts over (a few seconds here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from claimbench.plugins import TrainerResult

# The loss curve keeps a point every this many steps.
LOG_EVERY = 10


def train_smoothsgd(run) -> TrainerResult:  # noqa: ANN001  (a claimbench.plugins.TrainerRun)
    fields, model, data = run.fields, run.model, run.data
    batch = run.config.train.batch_size
    phases = list(run.config.train.phases) if run.config.train.unit == "steps" else [run.total_steps]
    ends = [sum(phases[: i + 1]) for i in range(len(phases))]
    opt = torch.optim.SGD(model.parameters(), lr=fields.lr, momentum=fields.momentum, nesterov=True,
                          weight_decay=fields.weight_decay)
    n = data.train_size
    order, position = torch.randperm(n), 0
    losses: list[float] = []
    history: dict[str, list] = {"loss_steps": [], "loss": []}
    model.train()
    for step in range(run.total_steps):
        phase = next(i for i, end in enumerate(ends) if step < end)
        for group in opt.param_groups:
            group["lr"] = fields.lr * 0.1 ** phase
        if position + batch > n:  # a new epoch; its incomplete tail was dropped
            order, position = torch.randperm(n), 0
        index = order[position : position + batch].to(data.train_x.device)
        position += batch
        loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index],
                               label_smoothing=fields.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0:
            history["loss_steps"].append(step + 1)
            history["loss"].append(sum(losses[-LOG_EVERY:]) / LOG_EVERY)
            run.report(step + 1)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.eval_batches("train", 500))
    tail = losses[-max(1, len(losses) // 10):]
    return TrainerResult(
        state_dict=model.state_dict(),
        metrics={"train_accuracy": 100.0 * correct / n, "final_loss": sum(tail) / len(tail)},
        history=history,
    )
