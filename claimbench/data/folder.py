"""TinyImageNet and ImageNet from image folders on local disk; neither is ever downloaded.

In:  ``DataConfig`` (dataset tinyimagenet|imagenet, optional image_size) and a data root.
Out: TinyImageNet: ``ImageData`` held in memory (100,000 train / 10,000 val images, 64x64 RGB,
200 classes, ~5 GB as float32; the val split is the test split). ImageNet: ``FolderImageData``,
which duck-types ``ImageData`` (``to``, ``train_batch``, ``eval_batches``, sizes) but decodes the
JPEGs for every batch, because 1.28M images do not fit in memory.

Layouts under the root (class index = position in the sorted class ids):

* ``tiny-imagenet-200/``: the official archive's layout, ``wnids.txt``,
  ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` and ``val/val_annotations.txt``
  (tab-separated filename, wnid, bbox), or a plain ImageFolder ``train/<class>/*``,
  ``val/<class>/*``.
* ``imagenet/``: ImageFolder ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the val images
  sorted into class folders, as torchvision's ImageNet preparation or the usual valprep script do).

ImageNet batches follow the standard recipe: shorter side resized to 256, a random 224 crop
(train, drawn from a generator seeded by the batch's indices, so a batch is reproducible) or the
centre crop (eval), horizontal flip where asked, ImageNet mean/std normalisation. Decoding uses
PIL in a thread pool, which is slow (a few ms per image per core); this path is meant for a
user's GPU box with many cores, not for the CPU test suite. So that decoding overlaps training
rather than following it, ``prefetch(index)`` decodes an announced training batch in a
background thread (the loop announces batch t+1 before running step t) and ``eval_batches``
decodes batch i+1 while batch i is evaluated; crops land in pinned memory and are copied to the
GPU without blocking, and normalisation runs on the device.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from claimbench.config import DataConfig
from claimbench.data.base import DatasetError, ImageData, normalise

TINY_FOLDER = "tiny-imagenet-200"
TINY_SIZE = 64
IMAGENET_FOLDER = "imagenet"
IMAGENET_CROP = 224
IMAGENET_RESIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Training batches decoded ahead of the step that uses them.
PREFETCH_DEPTH = 2
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm"})

_ROOT_HINT = "Set the data root with the CLAIMBENCH_DATA environment variable or --data-root."


def _workers() -> int:
    return min(32, os.cpu_count() or 1)


# --- TinyImageNet --------------------------------------------------------------------------


def load_tinyimagenet(cfg: DataConfig, root: Path) -> ImageData:
    """All of TinyImageNet in memory, (N, 3, s, s) with s = cfg.image_size or 64."""
    base = Path(root).expanduser() / TINY_FOLDER
    layout = (
        f"the official layout {base}/wnids.txt, {base}/train/<wnid>/images/*.JPEG, "
        f"{base}/val/images/*.JPEG and {base}/val/val_annotations.txt, or an ImageFolder layout "
        f"{base}/train/<class>/* and {base}/val/<class>/*"
    )
    if not base.is_dir():
        raise DatasetError(
            f"TinyImageNet not found: expected the folder {base}/ ({layout}). It is not downloaded "
            f"automatically: get tiny-imagenet-200.zip from http://cs231n.stanford.edu/ and unzip it "
            f"into {base.parent}. {_ROOT_HINT}"
        )
    if (base / "wnids.txt").is_file() and (base / "val" / "val_annotations.txt").is_file():
        train_files, train_y, val_files, val_y, classes = _tiny_official(base, layout)
    else:
        train_files, train_y, classes = _scan_image_folder(base / "train", None, "TinyImageNet", layout)
        val_files, val_y, _ = _scan_image_folder(base / "val", classes, "TinyImageNet", layout)
    train_x = _decode_all(train_files, TINY_SIZE)
    test_x = _decode_all(val_files, TINY_SIZE)
    if cfg.image_size is not None and cfg.image_size != TINY_SIZE:
        train_x, test_x = (
            F.interpolate(x.float(), size=(cfg.image_size,) * 2, mode="bilinear", align_corners=False,
                          antialias=cfg.image_size < TINY_SIZE)
            for x in (train_x, test_x)
        )
    train_x, test_x = normalise(train_x, test_x)
    return ImageData(
        name=cfg.dataset,
        train_x=train_x,
        train_y=torch.tensor(train_y, dtype=torch.int64),
        test_x=test_x,
        test_y=torch.tensor(val_y, dtype=torch.int64),
        num_classes=len(classes),
    )


def _tiny_official(base: Path, layout: str):
    wnids = sorted({line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    train_files, train_y = [], []
    for wnid in wnids:
        class_dir = base / "train" / wnid
        images_dir = class_dir / "images" if (class_dir / "images").is_dir() else class_dir
        files = _list_images(images_dir)
        if not files:
            raise DatasetError(f"TinyImageNet: no images in {images_dir}/ (class {wnid} of wnids.txt); expected {layout}.")
        train_files += files
        train_y += [index[wnid]] * len(files)
    val_files, val_y = [], []
    annotations = base / "val" / "val_annotations.txt"
    for lineno, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DatasetError(f"TinyImageNet: {annotations}:{lineno}: expected 'filename<TAB>wnid...' "
                               f"with a wnid from wnids.txt, got {line!r}.")
        path = base / "val" / "images" / fields[0]
        if not path.is_file():
            raise DatasetError(f"TinyImageNet: {annotations}:{lineno} names {path}, which does not exist.")
        val_files.append(path)
        val_y.append(index[fields[1]])
    if not val_files:
        raise DatasetError(f"TinyImageNet: {annotations} lists no images; expected {layout}.")
    return train_files, train_y, val_files, val_y, wnids


def _decode_all(paths: list[Path], side: int) -> torch.Tensor:
    """uint8 (N, 3, side, side); images of another size are resized (bilinear)."""
    out = np.empty((len(paths), side, side, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        out[i] = _open_rgb(paths[i], (side, side))

    # PIL releases the GIL while decoding, so threads give a real speed-up.
    with ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(decode, range(len(paths))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _open_rgb(path: Path, size: tuple[int, int] | None = None, shorter: int | None = None) -> np.ndarray:
    """HWC uint8 RGB, resized to ``size`` (w, h) or to a shorter side of ``shorter``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if shorter is not None:
                w, h = img.size
                scale = shorter / min(w, h)
                size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
            if size is not None:
                img.draft("RGB", size)  # JPEG: decode at a reduced scale that is still >= size
            img = img.convert("RGB")
            if size is not None and img.size != size:
                img = img.resize(size, Image.BILINEAR)
            return np.asarray(img)
    except OSError as e:
        raise DatasetError(f"cannot decode image {path} ({e}).") from e


# --- ImageFolder scanning ------------------------------------------------------------------


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    with os.scandir(folder) as it:
        files = [Path(e.path) for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    return sorted(files)


def _scan_image_folder(
    split_dir: Path, classes: list[str] | None, title: str, layout: str
) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of ``split_dir/<class>/*``; ``classes`` None: take them from the folders."""
    if not split_dir.is_dir():
        raise DatasetError(f"{title}: missing {split_dir}/; expected {layout}. {_ROOT_HINT}")
    with os.scandir(split_dir) as it:
        found = sorted(e.name for e in it if e.is_dir())
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if not found or unknown:
        what = f"class folders {unknown[:5]} that are not in train/" if unknown else "no class folders"
        raise DatasetError(f"{title}: {split_dir}/ has {what}; expected {layout}. {_ROOT_HINT}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for name in found:
        images = _list_images(split_dir / name)
        if not images:
            raise DatasetError(f"{title}: no image files directly in {split_dir / name}/; expected {layout}.")
        files += images
        labels += [index[name]] * len(images)
    return files, labels, classes


# --- ImageNet ------------------------------------------------------------------------------


def load_imagenet(cfg: DataConfig, root: Path) -> "FolderImageData":
    """ImageNet as a ``FolderImageData`` (files indexed now, decoded per batch)."""
    base = Path(root).expanduser() / IMAGENET_FOLDER
    layout = f"an ImageFolder layout {base}/train/<wnid>/*.JPEG and {base}/val/<wnid>/*.JPEG"
    if not base.is_dir():
        raise DatasetError(
            f"ImageNet not found: expected the folder {base}/ with {layout} (val images sorted into "
            f"class folders). ImageNet is never downloaded automatically. {_ROOT_HINT}"
        )
    train_files, train_y, classes = _scan_image_folder(base / "train", None, "ImageNet", layout)
    val_files, val_y, _ = _scan_image_folder(base / "val", classes, "ImageNet", layout)
    crop = cfg.image_size if cfg.image_size is not None else IMAGENET_CROP
    return FolderImageData(
        name=cfg.dataset,
        train_files=tuple(str(p) for p in train_files),
        train_y=torch.tensor(train_y, dtype=torch.int64),
        test_files=tuple(str(p) for p in val_files),
        test_y=torch.tensor(val_y, dtype=torch.int64),
        num_classes=len(classes),
        image_size=crop,
        resize=round(crop * IMAGENET_RESIZE / IMAGENET_CROP),
    )


@dataclass(frozen=True, eq=False)
class FolderImageData:
    """ImageData's interface over image files: decodes, crops and normalises every batch.

    Slow by design (PIL decoding, a few ms per image per core): meant for a GPU box with many
    cores; there, put the labels on the GPU with ``to(device)`` and batches arrive there too.
    """

    name: str
    train_files: tuple[str, ...]
    train_y: torch.Tensor  # int64 (N,), on ``device``
    test_files: tuple[str, ...]
    test_y: torch.Tensor
    num_classes: int
    image_size: int = IMAGENET_CROP
    resize: int = IMAGENET_RESIZE  # shorter side before cropping
    device: torch.device = torch.device("cpu")
    in_channels: int = 3
    # The images' float type on the device: float32 for training; gpu-check's exact reference asks
    # for float64 (the same float32 images, widened, as in-memory data is).
    dtype: torch.dtype = torch.float32
    decodes_on_host: ClassVar[bool] = True
    # Batches being decoded in the background (index bytes -> future) and the decoding thread;
    # not init fields, so ``to`` (dataclasses.replace) starts a copy with none.
    _ahead: dict = field(default_factory=dict, init=False, repr=False)
    _state: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def train_size(self) -> int:
        return len(self.train_files)

    @property
    def test_size(self) -> int:
        return len(self.test_files)

    def to(self, device: torch.device | str) -> "FolderImageData":
        device = torch.device(device)
        # The labels stay on the host too: each batch's are gathered there (see train_batch).
        host_y = self._state.get("host_y", self.train_y.cpu())
        moved = replace(self, device=device, train_y=self.train_y.to(device), test_y=self.test_y.to(device))
        moved._state["host_y"] = host_y
        return moved

    def train_batch(self, index: torch.Tensor, flip: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops of the images at ``index``; the same index tensor gives the same crops.
        A batch announced with ``prefetch`` was decoded in the background and is taken from there."""
        # ``index`` may be (K, B) for K stacked runs: decode the flat batch, then restore the shape.
        # Everything per batch happens on the host and reaches the device in two copies from pinned
        # memory that the host does not wait for (the images, the labels): the flips are applied
        # to the uint8 crops and the labels gathered before the copy, the normalisation constants
        # live on the device from the first batch on. (The loop hands folder data host indices.)
        shaped = index.detach().to("cpu", torch.int64)
        idx = shaped.reshape(-1)
        pending = self._ahead.pop(idx.numpy().tobytes(), None)
        host = pending.result() if pending is not None else self._decode_host(*self._train_crops(shaped))
        if flip is not None:
            flips = flip.detach().to("cpu").reshape(-1)
            host[flips] = host[flips].flip(-2)  # (B, H, W, C): mirror the width
        x = self._on_device(host)
        x = x.reshape(*index.shape, *x.shape[1:])
        return x, self._labels(idx).reshape(index.shape)

    def prefetch(self, index: torch.Tensor, flip: torch.Tensor | None = None) -> None:
        """Start decoding the batch at ``index`` in a background thread, so that it overlaps the
        current training step; ``train_batch`` with the same indices then only copies it. At most
        ``PREFETCH_DEPTH`` batches are held."""
        shaped = index.detach().to("cpu", torch.int64)
        key = shaped.reshape(-1).numpy().tobytes()
        if key in self._ahead:
            return
        if "pool" not in self._state:
            self._state["pool"] = ThreadPoolExecutor(1, thread_name_prefix="claimbench-prefetch")
        while len(self._ahead) >= PREFETCH_DEPTH:
            self._ahead.pop(next(iter(self._ahead)))
        self._ahead[key] = self._state["pool"].submit(self._decode_host, *self._train_crops(shaped))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Centre crops of ``split`` ('train' or 'test') in order, unaugmented; the next batch is
        decoded in the background while the caller evaluates this one."""
        files, y = (self.train_files, self.train_y) if split == "train" else (self.test_files, self.test_y)
        starts = list(range(0, len(files), batch_size))
        if not starts:
            return

        def decode(start: int):
            chunk = list(files[start : start + batch_size])
            return self._decode_host(chunk, torch.full((len(chunk), 2), 0.5))

        with ThreadPoolExecutor(1, thread_name_prefix="claimbench-eval-prefetch") as ahead:
            future = ahead.submit(decode, starts[0])
            for i, start in enumerate(starts):
                host = future.result()
                if i + 1 < len(starts):
                    future = ahead.submit(decode, starts[i + 1])
                yield self._on_device(host), y[start : start + batch_size]

    def _train_crops(self, index: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """The files and crop offsets of a batch: ``index`` (B,) for one run, (K, B) for K stacked
        runs, flattened in that order."""
        # Seeding from the indices (not a global RNG) keeps a run reproducible however batches
        # are scheduled (and prefetched), and still varies the crops between epochs. Each run's
        # crops come from its own indices alone, so a run stacked with others gets the crops it
        # gets alone (seeded from the whole stacked batch, its crops changed with its neighbours).
        offsets = []
        for row in index.reshape(-1, index.shape[-1]):
            seed = int.from_bytes(hashlib.blake2b(row.contiguous().numpy().tobytes(), digest_size=8).digest(), "little")
            gen = torch.Generator().manual_seed(seed >> 1)
            offsets.append(torch.rand(row.numel(), 2, generator=gen))
        flat = index.reshape(-1)
        return [self.train_files[i] for i in flat.tolist()], torch.cat(offsets)

    def _decode_host(self, files: list[str], offsets: torch.Tensor) -> torch.Tensor:
        """uint8 (B, crop, crop, 3) crops in host memory (pinned when the device is a GPU, so the
        copy to it does not block); ``offsets`` in [0, 1] pick the crop."""
        crop = self.image_size
        out = np.empty((len(files), crop, crop, 3), dtype=np.uint8)
        frac = offsets.tolist()

        def load(i: int) -> None:
            img = _open_rgb(Path(files[i]), shorter=self.resize)
            h, w = img.shape[:2]
            top = min(int(frac[i][0] * (h - crop + 1)), h - crop)
            left = min(int(frac[i][1] * (w - crop + 1)), w - crop)
            out[i] = img[top : top + crop, left : left + crop]

        with ThreadPoolExecutor(min(_workers(), max(1, len(files)))) as pool:
            list(pool.map(load, range(len(files))))
        host = torch.from_numpy(out)
        return host.pin_memory() if self.device.type == "cuda" else host

    def _labels(self, idx: torch.Tensor) -> torch.Tensor:
        """The labels at host indices ``idx``, gathered on the host and copied without waiting."""
        if "host_y" not in self._state:
            self._state["host_y"] = self.train_y.cpu()
        y = self._state["host_y"][idx]
        if self.device.type == "cuda":
            y = y.pin_memory()
        return y.to(self.device, non_blocking=True)

    def _constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet's per-channel mean and std on the device, made once (not per batch)."""
        if "norm" not in self._state:
            self._state["norm"] = (torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None],
                                   torch.tensor(IMAGENET_STD, device=self.device)[:, None, None])
        return self._state["norm"]

    def _on_device(self, host: torch.Tensor) -> torch.Tensor:
        """Normalised float32 (B, 3, crop, crop) on the device (the arithmetic runs there)."""
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        mean, std = self._constants()
        x = ((x - mean) / std).contiguous()
        return x if self.dtype == torch.float32 else x.to(self.dtype)
