"""The declaration of the ``skdigits`` dataset (entry point group ``claimbench.datasets``).

scikit-learn's 1,797 handwritten digits as one-channel 8x8 images: 1,400 for training, 397 for
testing, split by the run's ``data.data_seed``. The shape facts below are what claimbench validates and
plans with; the loader must return data of exactly that shape.
"""

from __future__ import annotations

from pathlib import Path

from claimbench.plugins import DatasetPlugin

TRAIN = 1400


def load(root: Path, seed: int) -> dict:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in 0..1
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:TRAIN], order[TRAIN:]
    return {"train_x": images[train], "train_y": digits.target[train],
            "test_x": images[test], "test_y": digits.target[test]}


skdigits = DatasetPlugin(name="skdigits", load=load, train_size=TRAIN, image_size=8, channels=1, classes=10)
