"""The size of every dataset, known without loading it (and without torch).

In:  a ``DataConfig``.
Out: (train images, image side, channels, classes): what planning needs to count steps and FLOPs.
The loaders read their defaults from here, so a plan and a loaded dataset agree
(``tests/test_plan_report.py`` pins every dataset).
"""

from __future__ import annotations

from repro.config import DataConfig



class DatasetError(RuntimeError):
    """A dataset that cannot be loaded; the message says where the files are expected. Defined
    here, without torch, so the CLI can catch it without loading the training stack."""


DIGITS_TRAIN = 1400  # of 1,797; the remaining 397 are the test set
SHAPES_DEFAULT_CLASSES = 10
SHAPES_DEFAULT_SIZE = 16
SHAPES_DEFAULT_TRAIN = 4000
SHAPES_DEFAULT_TEST = 1000

# (train images, image side, channels, classes) of the published datasets.
DATASET_SHAPES = {
    "digits": (DIGITS_TRAIN, 8, 3, 10),
    "cifar10": (50000, 32, 3, 10),
    "cifar100": (50000, 32, 3, 100),
    "tinyimagenet": (100000, 64, 3, 200),
    "imagenet": (1281167, 224, 3, 1000),
}


def data_shape(cfg: DataConfig) -> tuple[int, int, int, int]:
    """(train images, image side after resizing, channels, classes) of ``cfg``."""
    if cfg.dataset.startswith("shapes"):
        n = cfg.train_size or SHAPES_DEFAULT_TRAIN
        k = cfg.num_classes or SHAPES_DEFAULT_CLASSES
        return n, cfg.image_size or SHAPES_DEFAULT_SIZE, 3, k
    n, side, ch, k = DATASET_SHAPES[cfg.dataset]
    return n, cfg.image_size or side, ch, k
