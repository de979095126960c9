"""The declaration of the ``smoothsgd`` trainer (entry point group ``claimbench.trainers``).

A training loop of one's own: SGD with Nesterov momentum on a label-smoothed cross-entropy, in
place of claimbench's loop, for runs whose config says ``train.trainer: smoothsgd``. claimbench still
builds and seeds the network, caches the run, measures the weights it returns like any run's and
checks the claims; the loop adds two numbers of its own (``train_accuracy``, ``final_loss``),
which claims may name. No torch at import: the loop is in ``claimbench_plugin_example.smoothsgd``.
"""

from __future__ import annotations

from dataclasses import dataclass

from claimbench.plugins import TrainerPlugin


@dataclass(frozen=True)
class SmoothSGDFields:
    """``train.params`` of a config."""

    lr: float = 0.05  # the first phase's learning rate; divided by 10 at each later phase
    momentum: float = 0.9
    label_smoothing: float = 0.1
    weight_decay: float = 5e-4


def train(run):  # noqa: ANN001, ANN201  (a claimbench.plugins.TrainerRun -> TrainerResult)
    from claimbench_plugin_example.smoothsgd import train_smoothsgd

    return train_smoothsgd(run)


smoothsgd = TrainerPlugin(name="smoothsgd", train=train, fields=SmoothSGDFields,
                          metrics=("train_accuracy", "final_loss"))
