"""Small datasets in the real on-disk formats, written deterministically: CIFAR's pickled batches
in its official archive, TinyImageNet's JPEG folders (the official layout and an ImageFolder) and
ImageNet's. The loaders read them as they would read the real ones."""

from __future__ import annotations

import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np


def cifar_archive(root: Path, dataset: str, per_file: int = 8, seed: int = 0) -> Path:
    """The official archive of ``dataset`` ("cifar10" or "cifar100") under ``root``, tiny batches."""
    from claimbench.data import cifar

    src = cifar.SOURCES[dataset]
    rng = np.random.default_rng(seed)
    stage = root / f"stage-{dataset}"
    folder = stage / src.folder
    folder.mkdir(parents=True)
    for name in src.train_files + (src.test_file,):
        labels = rng.integers(0, src.num_classes, size=per_file)
        batch = {b"batch_label": b"fabricated", src.label_key: labels.tolist(),
                 b"data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)}
        if src.label_key == b"fine_labels":
            batch[b"coarse_labels"] = (labels // 5).tolist()
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    archive = root / src.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=src.folder)
    shutil.rmtree(stage)
    return archive


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int], grey: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    (image.convert("L") if grey else image).save(path, quality=90)


def tinyimagenet_folder(root: Path, classes: int = 3, per_class: int = 3, seed: int = 0) -> None:
    """TinyImageNet's official layout (wnids.txt, train/<wnid>/images, val annotations)."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(classes)]
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    for wnid in wnids:
        for j in range(per_class):
            _jpeg(base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", rng, (64, 64), grey=j == 0)
    val = [(f"val_{i}.JPEG", wnids[i % classes]) for i in range(classes * 2)]
    for name, _ in val:
        _jpeg(base / "val" / "images" / name, rng, (64, 64))
    (base / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))


def tinyimagenet_imagefolder(root: Path, classes: int = 3, per_class: int = 2, seed: int = 1) -> None:
    """TinyImageNet as an ImageFolder (train/<class>/*, val/<class>/*), the layout its loader takes
    when wnids.txt and the val annotations are absent; images of other sizes are resized."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    for c in range(classes):
        for split, count in (("train", per_class), ("val", 1)):
            for j in range(count):
                _jpeg(base / split / f"class{c}" / f"{j}.jpg", rng, (64, 64) if j else (48, 56))


def imagenet_folder(root: Path, classes: int = 2, per_class: int = 4, seed: int = 0) -> None:
    """ImageNet as class folders of JPEGs of assorted sizes (train/ and val/)."""
    rng = np.random.default_rng(seed)
    sizes = [(300, 260), (260, 340), (280, 280), (320, 300)]
    for c in range(classes):
        for split, count in (("train", per_class), ("val", 2)):
            for j in range(count):
                _jpeg(root / "imagenet" / split / f"n{c:08d}" / f"{j}.JPEG", rng, sizes[j % len(sizes)])
