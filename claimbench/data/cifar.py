"""CIFAR-10 and CIFAR-100 from the official python-format archives.

In:  ``DataConfig`` (dataset cifar10|cifar100, optional image_size), a data root directory and
whether downloading is allowed.
Out: ``ImageData``: 50,000 train / 10,000 test images (N, 3, 32, 32) (or image_size), normalised
with the training set's channel statistics; CIFAR-100 uses the 100 fine labels.

Under the root, the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) is used
if present, else the ``.tar.gz`` next to it is extracted, else (when allowed) the archive is
downloaded from the official URL, its md5 checked, and extracted. Downloads and extraction write
to temporary names and rename at the end, so an interrupted run never leaves a half-written
file under the final name. Anything missing raises ``DatasetError`` naming the expected path.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from claimbench.config import DataConfig
from claimbench.data.base import DatasetError, ImageData, normalise


@dataclass(frozen=True)
class CifarSource:
    title: str
    url: str
    archive: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    num_classes: int


SOURCES = {
    "cifar10": CifarSource(
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        label_key=b"labels",
        num_classes=10,
    ),
    "cifar100": CifarSource(
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        label_key=b"fine_labels",
        num_classes=100,
    ),
}


def load_cifar(cfg: DataConfig, root: Path, download: bool) -> ImageData:
    """Load ``cfg.dataset`` (cifar10 or cifar100) from ``root``, fetching it first if allowed."""
    src = SOURCES[cfg.dataset]
    root = Path(root).expanduser()
    folder = _ensure_folder(src, root, download)
    train_x, train_y = _read_batches(src, folder, src.train_files)
    test_x, test_y = _read_batches(src, folder, (src.test_file,))
    if cfg.image_size is not None and cfg.image_size != train_x.shape[-1]:
        train_x, test_x = (_resize(x, cfg.image_size) for x in (train_x, test_x))
    train_x, test_x = normalise(train_x, test_x)
    return ImageData(
        name=cfg.dataset,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=src.num_classes,
    )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def _missing_message(src: CifarSource, root: Path, reason: str) -> str:
    return (
        f"{src.title} not found: expected the folder {root / src.folder}/ or the archive "
        f"{root / src.archive} under {root}. {reason} Download {src.url} (md5 {src.md5}) into "
        f"{root}, or set the data root with the CLAIMBENCH_DATA environment variable or --data-root."
    )


def _ensure_folder(src: CifarSource, root: Path, download: bool) -> Path:
    folder = root / src.folder
    if folder.is_dir():
        return folder
    archive = root / src.archive
    if not archive.is_file():
        if not download:
            raise DatasetError(_missing_message(src, root, "Downloading is disabled."))
        try:
            root.mkdir(parents=True, exist_ok=True)
            _download(src, archive)
        except DatasetError:
            raise
        except Exception as e:  # network, permissions, disk: all end in the same advice
            raise DatasetError(_missing_message(src, root, f"Download failed ({type(e).__name__}: {e}).")) from e
    _extract(src, archive, root)
    return folder


def _download(src: CifarSource, archive: Path) -> None:
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    try:
        _fetch(src.url, partial)
        actual = _md5(partial)
        if actual != src.md5:
            raise DatasetError(
                f"{src.title}: downloaded {src.url} has md5 {actual}, expected {src.md5}; the partial "
                f"file was deleted. Retry, or place {src.archive} under {archive.parent} yourself."
            )
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to exactly ``dest`` (the caller checks the md5 and renames)."""
    try:
        from torchvision.datasets.utils import download_url
    except Exception:  # torchvision is optional and may not import against this torch build
        download_url = None
    if download_url is not None:
        download_url(url, str(dest.parent), filename=dest.name)
        return
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(src: CifarSource, archive: Path, root: Path) -> None:
    # Extract beside the target and rename, so a crash mid-extraction leaves no partial folder
    # that the next run would mistake for a complete one.
    staging = Path(tempfile.mkdtemp(prefix=f".{src.folder}.", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(
                f"{src.title}: cannot extract {archive} ({e}); delete it and retry, or replace it "
                f"with the official archive from {src.url} (md5 {src.md5})."
            ) from e
        extracted = staging / src.folder
        if not extracted.is_dir():
            raise DatasetError(
                f"{src.title}: {archive} does not contain the folder {src.folder}/; expected the "
                f"official archive from {src.url} (md5 {src.md5})."
            )
        try:
            os.replace(extracted, root / src.folder)
        except OSError:
            if not (root / src.folder).is_dir():  # else another process won the race: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_batches(src: CifarSource, folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DatasetError(
                f"{src.title}: missing {path}; the folder {folder}/ should hold "
                f"{', '.join(src.train_files + (src.test_file,))} from {src.url}."
            )
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[src.label_key], dtype=np.int64)
        except Exception as e:
            raise DatasetError(f"{src.title}: cannot read {path} ({type(e).__name__}: {e}).") from e
        if labels.shape[0] != data.shape[0]:
            raise DatasetError(f"{src.title}: {path} has {data.shape[0]} images but {labels.shape[0]} labels.")
        if labels.size and (labels.min() < 0 or labels.max() >= src.num_classes):
            raise DatasetError(f"{src.title}: {path} has labels outside 0..{src.num_classes - 1}.")
        xs.append(torch.from_numpy(data))
        ys.append(torch.from_numpy(labels))
    return torch.cat(xs), torch.cat(ys)
