"""What gpu-check trains: a window of a run's schedule and fabricated data of its dataset's shape.

In:  a run's ``RunConfig``, the device, how many steps.
Out: ``window`` (the config over a few steps in two learning-rate phases, shrunk on a CPU),
     ``resume_at`` (the step the fast path is interrupted after) and ``fabricated_data`` (learnable
     images of the dataset's real shape and classes; for a folder dataset, JPEG files read through
     the real image-folder loader). Used by the check, its self-test and its group-size sweep, so
     each trains what the others train.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from claimbench.config import DATASET_SHAPES, RunConfig
from claimbench.gpu_check.kinds import CPU_BATCH, CPU_FC, CPU_SIDE, CPU_WIDTH, FOLDER_DATASETS

EPOCH_BATCHES = 8  # fabricated training set: this many batches, so epochs turn over in the window


def window(config: RunConfig, steps: int, quick: bool) -> RunConfig:
    """``config`` over ``steps`` steps in two learning-rate phases (so graphs are captured again
    inside the window), one snapshot; on the CPU (``quick``) shrunk in width and batch."""
    first = max(1, round(steps * 0.45))
    train = replace(config.train, unit="steps", phases=(first, steps - first), snapshots=1)
    if quick:
        train = replace(train, batch_size=min(train.batch_size, CPU_BATCH))
        side = config.data.image_size or DATASET_SHAPES[config.data.dataset][1]
        config = replace(config, data=replace(config.data, image_size=min(side, CPU_SIDE)))
        from claimbench.netshape import default_head

        head = config.model.fc_hidden if config.model.fc_hidden is not None else default_head(
            config.model.arch, config.data.dataset)
        config = replace(config, model=replace(config.model, width=min(config.model.width, CPU_WIDTH),
                                               fc_hidden=tuple(min(h, CPU_FC) for h in head)))
    return replace(config, train=train)


def resume_at(steps: int) -> int:
    """The step the fast path is interrupted after: mid-way through the second phase, leaving room
    for 3 warm-ups, a capture and replays after the resume."""
    first = max(1, round(steps * 0.45))
    return first + max(1, (steps - first) // 2 - 1)


def fabricated_data(config: RunConfig, device, seed: int = 0, folder: Path | None = None):
    """Images of the dataset's real shape and classes (``DATASET_SHAPES``), EPOCH_BATCHES batches
    of training data, learnable (each class its own mean image, plus noise). Folder datasets are
    written as JPEG files in an ImageFolder layout under ``folder`` (a temporary folder removed at
    exit when None) and read through the real image-folder loader (``FolderImageData``: decoded,
    cropped and normalised per batch on the host, prefetched), as a run on the real dataset is."""
    import torch

    from claimbench.data.base import ImageData

    d = config.data
    _, native_side, channels, classes = DATASET_SHAPES[d.dataset]
    side, classes = d.image_size or native_side, d.num_classes or classes
    n = config.train.batch_size * EPOCH_BATCHES
    b = config.train.batch_size
    if d.dataset in FOLDER_DATASETS:
        return _jpeg_folder_data(config, folder, seed, n, classes).to(device)
    g = torch.Generator().manual_seed(seed)
    # Learnable: each class its own mean image, plus noise. With labels unrelated to the images the
    # gradients are mostly cancelling noise, and Adam-like optimizers amplify rounding in them
    # into differences a check cannot tell from a fault.
    y = torch.randint(classes, (n,), generator=g)
    means = torch.randn(classes, channels, side, side, generator=g)
    x = means[y] + torch.randn(n, channels, side, side, generator=g)
    return ImageData(f"fabricated {d.dataset}", x, y, x[:b].clone(), y[:b].clone(), classes).to(device)


def _jpeg_folder_data(config: RunConfig, folder: Path | None, seed: int, n: int, classes: int):
    """``n`` JPEG files under ``folder/train/<class>/`` (each class its own colour field plus
    noise), as a ``FolderImageData`` of ``classes`` classes, the first batch also the test split.
    Built from the file list, not by scanning: a class count of 1,000 with a few hundred images
    leaves most class folders empty, which the scan of a real dataset rightly refuses."""
    import atexit
    import shutil

    import numpy as np
    import torch
    from PIL import Image

    from claimbench.data.folder import IMAGENET_CROP, IMAGENET_RESIZE, FolderImageData

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="claimbench-gpu-check-jpeg-"))
        atexit.register(shutil.rmtree, folder, True)
    crop = config.data.image_size or IMAGENET_CROP
    resize = round(crop * IMAGENET_RESIZE / IMAGENET_CROP)
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    colours = rng.uniform(40, 215, size=(classes, 1, 1, 3))
    files = []
    for i, y in enumerate(labels.tolist()):
        path = folder / "train" / f"n{y:08d}" / f"fabricated_{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(colours[y] + rng.normal(0, 25, size=(resize, resize, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        files.append(str(path))
    b = config.train.batch_size
    y = torch.tensor(labels, dtype=torch.int64)
    return FolderImageData(f"fabricated {config.data.dataset} (JPEG files)", tuple(files), y, tuple(files[:b]),
                           y[:b].clone(), classes, image_size=crop, resize=resize)
