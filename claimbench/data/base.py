"""The in-memory image dataset every training run and metric reads from.

In:  uint8/float images and int labels from a loader (embedded, CIFAR, image folders).
Out: ``ImageData``: normalised float32 tensors (N, C, H, W) that can live on the training device,
so that a training step is an index + a batched flip, with no per-sample Python on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Iterator

import torch


from claimbench.data.catalog import DatasetError  # noqa: E402,F401  (defined without torch; re-exported)


@dataclass(frozen=True)
class ImageData:
    name: str
    train_x: torch.Tensor  # float32 (N, C, H, W), normalised with the training set's channel stats
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    # In memory: a batch is a gather on the device. Image-folder data (``FolderImageData``) decodes
    # each batch on the host instead; the loop then announces the next batch with ``prefetch``.
    decodes_on_host: ClassVar[bool] = False

    @property
    def train_size(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def test_size(self) -> int:
        return int(self.test_x.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def train_batch(self, index: torch.Tensor, flip: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch for ``index`` (any shape, e.g. (K, B) for K runs); ``flip`` (bool, shaped
        like ``index``) mirrors images horizontally."""
        x = self.train_x[index]
        if flip is not None:
            x = torch.where(flip[..., None, None, None], x.flip(-1), x)
        return x, self.train_y[index]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Unaugmented batches of ``split`` ('train' or 'test') in order."""
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def normalise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel normalisation with the training set's mean and std (paper: 'normalized images')."""
    train_x = train_x.float()
    test_x = test_x.float()
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return (train_x - mean) / std, (test_x - mean) / std
