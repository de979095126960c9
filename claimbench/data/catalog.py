"""The size of every dataset, known without loading it (and without torch).

In:  a ``DataConfig``.
Out: (train images, image side, channels, classes): what planning needs to count steps and FLOPs.
The loaders read their defaults from here, so a plan and a loaded dataset agree
(``tests/test_plan_report.py`` pins every dataset). The table itself is
``claimbench.config.DATASET_SHAPES``: validation reads it too.
"""

from __future__ import annotations

from claimbench.config import DATASET_SHAPES, DataConfig, dataset_shape


class DatasetError(RuntimeError):
    """A dataset that cannot be loaded; the message says where the files are expected. Defined
    here, without torch, so the CLI can catch it without loading the training stack."""


DIGITS_TRAIN = DATASET_SHAPES["digits"][0]
SHAPES_DEFAULT_TRAIN, SHAPES_DEFAULT_SIZE, _, SHAPES_DEFAULT_CLASSES = DATASET_SHAPES["shapes_clean"]
SHAPES_DEFAULT_TEST = 1000


def data_shape(cfg: DataConfig) -> tuple[int, int, int, int]:
    """(train images, image side after resizing, channels, classes) of ``cfg``."""
    n, side, ch, k = dataset_shape(cfg.dataset)  # a plug-in's from its declaration
    if cfg.dataset.startswith("shapes"):
        n, k = cfg.train_size or n, cfg.num_classes or k
    return n, cfg.image_size or side, ch, k
