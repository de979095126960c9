"""Every dataset of the experiments behind one call.

In:  ``DataConfig`` (which dataset, optional resize, synthetic sizes, data seed), a data root
(default: ``$CLAIMBENCH_DATA``, else ``~/.cache/claimbench/data``) and whether CIFAR may be downloaded.
Out: ``ImageData`` (normalised tensors in memory) for digits, shapes_clean, shapes_cluttered,
cifar10, cifar100 and tinyimagenet; ``FolderImageData`` (same interface, decoded per batch) for
imagenet. A dataset that is not on disk and cannot be fetched raises ``DatasetError`` saying
which file or folder is expected where.

digits and shapes_* are generated offline (``claimbench.data.embedded``) and ignore the root;
``num_classes``, ``train_size`` and ``test_size`` apply to the shapes only. CIFAR is the only
dataset ever downloaded; TinyImageNet and ImageNet must already be under the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from claimbench.config import DATASETS, DataConfig, plugin_registry

if TYPE_CHECKING:
    from claimbench.data.base import DatasetError, ImageData

__all__ = ["DatasetError", "ImageData", "default_data_root", "load_dataset"]


def __getattr__(name: str):
    # The tensor types load torch; ``claimbench.data.catalog`` (sizes for planning) must not.
    if name in ("DatasetError", "ImageData"):
        from claimbench.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'claimbench.data' has no attribute {name!r}")


def default_data_root() -> Path:
    env = os.environ.get("CLAIMBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "claimbench" / "data"


def load_dataset(cfg: DataConfig, root: Path | None = None, download: bool = True) -> ImageData:
    """Load ``cfg.dataset``; see the module docstring for where each one comes from."""
    root = Path(root).expanduser() if root is not None else default_data_root()
    name = cfg.dataset
    # Imports are per branch so that loading digits never pays for PIL or the CIFAR code.
    if name == "digits":
        from claimbench.data.embedded import load_digits_data

        return load_digits_data(cfg)
    if name in ("shapes_clean", "shapes_cluttered"):
        from claimbench.data.embedded import load_shapes_data

        return load_shapes_data(cfg, cluttered=name == "shapes_cluttered")
    if name in ("cifar10", "cifar100"):
        from claimbench.data.cifar import load_cifar

        return load_cifar(cfg, root, download)
    if name == "tinyimagenet":
        from claimbench.data.folder import load_tinyimagenet

        return load_tinyimagenet(cfg, root)
    if name == "imagenet":
        from claimbench.data.folder import load_imagenet

        return load_imagenet(cfg, root)  # type: ignore[return-value]  # duck-typed ImageData
    from claimbench.data.base import DatasetError

    registry = plugin_registry()
    try:
        plugin = registry.dataset_plugin(name).plugin
    except registry.PluginError as e:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} ({e})") from None
    return load_plugin_data(plugin, cfg, root)


def load_plugin_data(plugin, cfg: DataConfig, root: Path) -> ImageData:  # noqa: ANN001  (a DatasetPlugin)
    """A plug-in dataset (``claimbench.plugins.DatasetPlugin``) as ``ImageData``: its loader's four
    arrays, checked against the shape facts it declares (validation and planning used those), with
    the images normalised as every dataset's are. A loader that returns something else is a
    ``DatasetError`` naming the plug-in and what differs."""
    import torch

    from claimbench.data.base import DatasetError, ImageData, normalise

    where = f"plug-in dataset {plugin.name}"
    loaded = plugin.load(root, cfg.data_seed)
    arrays = {}
    for part in ("train_x", "train_y", "test_x", "test_y"):
        value = loaded.get(part) if isinstance(loaded, dict) else getattr(loaded, part, None)
        if value is None:
            raise DatasetError(f"{where}: load returned no {part}")
        arrays[part] = torch.as_tensor(value)
    shape = (plugin.channels, plugin.image_size, plugin.image_size)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dim() != 4 or tuple(x.shape[1:]) != shape or not x.is_floating_point():
            raise DatasetError(f"{where}: {split}_x is {x.dtype} {tuple(x.shape)}, expected float images "
                               f"(N, {', '.join(map(str, shape))}) as declared")
        if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
            raise DatasetError(f"{where}: {split}_y is {y.dtype} {tuple(y.shape)}, expected {x.shape[0]} integer labels")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= plugin.classes):
            raise DatasetError(f"{where}: {split}_y has labels outside 0..{plugin.classes - 1} ({plugin.classes} "
                               f"classes declared)")
    if arrays["train_x"].shape[0] != plugin.train_size:
        raise DatasetError(f"{where}: {arrays['train_x'].shape[0]} training images, {plugin.train_size} declared")
    train_x, test_x = normalise(arrays["train_x"], arrays["test_x"])
    return ImageData(plugin.name, train_x.contiguous(), arrays["train_y"].long(), test_x.contiguous(),
                     arrays["test_y"].long(), plugin.classes)
