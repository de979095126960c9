"""Training: the one entry that trains a group of runs, by claimbench's loop or a registered trainer.

In:  RunConfigs that may train together (``claimbench.config.group_key``), their ImageData on the
     training device, the device, and the loop's options (progress callback, checkpoint path,
     CUDA graphs, cuDNN autotuning, optimizer kernels, dtype).
Out: ``train_runs``: one ``TrainOutcome`` per config (``claimbench.train.outcome``).

``train_runs`` is the only place that decides who trains a group: a run whose config names a
registered trainer (``train.trainer``) is handed, alone, to ``claimbench.train.trainer``; every
other group goes to ``claimbench.train.loop``. Neither of those imports the other; what both need
lives in ``outcome`` (the records they return) and ``device`` (precision and device settings).

This package is also the training code's entry for provenance (``claimbench.cache.keys``
``TRAINING_ENTRY``): what it imports, inside functions too, is training code, so the trainer
harness is counted with the loop. Its imports are inside ``train_runs`` because planning, keys
and reports import ``claimbench.train.semantics`` (and so run this file) without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

    from claimbench.config import RunConfig
    from claimbench.data.base import ImageData
    from claimbench.train.outcome import TrainOutcome


def train_runs(configs: list[RunConfig], data: ImageData, device: torch.device,
               on_step: Callable[[int, int], None] | None = None, checkpoint: Path | None = None,
               cudnn_benchmark: bool | None = None, **loop_options: Any) -> list[TrainOutcome]:
    """Train ``configs`` as one group and return their outcomes, in order.

    A run whose config names a registered trainer is trained by it, one run at a time (a group of
    such runs is an error), with claimbench's float32 precision and cuDNN settings applied first;
    graphs, kernels and dtype are then the trainer's business, and ``checkpoint`` reaches it only
    when it is resumable. Every other group is ``claimbench.train.loop.train_models``, which
    documents ``loop_options`` (checkpoint_every_s, cuda_graphs, graph_backend, kernels, dtype).
    """
    if any(c.train.trainer is not None for c in configs):
        from claimbench.train.device import set_precision
        from claimbench.train.trainer import train_with_trainer

        if len(configs) != 1:
            raise ValueError(f"a trainer's runs train one at a time, not in a group of {len(configs)}")
        set_precision(configs[0].train.precision, device, cudnn_benchmark, configs[0].train.flush_denormals)
        return [train_with_trainer(configs[0], data, device, on_step, checkpoint)]
    from claimbench.train.loop import train_models

    return train_models(configs, data, device, on_step=on_step, checkpoint=checkpoint, cudnn_benchmark=cudnn_benchmark,
                        **loop_options)
