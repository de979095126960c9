"""Every dataset of the experiments behind one call.

In:  ``DataConfig`` (which dataset, optional resize, synthetic sizes, data seed), a data root
(default: ``$REPRO_DATA``, else ``~/.cache/repro/data``) and whether CIFAR may be downloaded.
Out: ``ImageData`` (normalised tensors in memory) for digits, shapes_clean, shapes_cluttered,
cifar10, cifar100 and tinyimagenet; ``FolderImageData`` (same interface, decoded per batch) for
imagenet. A dataset that is not on disk and cannot be fetched raises ``DatasetError`` saying
which file or folder is expected where.

digits and shapes_* are generated offline (``repro.data.embedded``) and ignore the root;
``num_classes``, ``train_size`` and ``test_size`` apply to the shapes only. CIFAR is the only
dataset ever downloaded; TinyImageNet and ImageNet must already be under the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from repro.config import DATASETS, DataConfig

if TYPE_CHECKING:
    from repro.data.base import DatasetError, ImageData

__all__ = ["DatasetError", "ImageData", "default_data_root", "load_dataset"]


def __getattr__(name: str):
    # The tensor types load torch; ``repro.data.catalog`` (sizes for planning) must not.
    if name in ("DatasetError", "ImageData"):
        from repro.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'repro.data' has no attribute {name!r}")


def default_data_root() -> Path:
    env = os.environ.get("REPRO_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "repro" / "data"


def load_dataset(cfg: DataConfig, root: Path | None = None, download: bool = True) -> ImageData:
    """Load ``cfg.dataset``; see the module docstring for where each one comes from."""
    root = Path(root).expanduser() if root is not None else default_data_root()
    name = cfg.dataset
    # Imports are per branch so that loading digits never pays for PIL or the CIFAR code.
    if name == "digits":
        from repro.data.embedded import load_digits_data

        return load_digits_data(cfg)
    if name in ("shapes_clean", "shapes_cluttered"):
        from repro.data.embedded import load_shapes_data

        return load_shapes_data(cfg, cluttered=name == "shapes_cluttered")
    if name in ("cifar10", "cifar100"):
        from repro.data.cifar import load_cifar

        return load_cifar(cfg, root, download)
    if name == "tinyimagenet":
        from repro.data.folder import load_tinyimagenet

        return load_tinyimagenet(cfg, root)
    if name == "imagenet":
        from repro.data.folder import load_imagenet

        return load_imagenet(cfg, root)  # type: ignore[return-value]  # duck-typed ImageData
    from repro.data.base import DatasetError

    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
