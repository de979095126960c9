"""Datasets that need no download: real 8x8 digits and synthetic shapes on clean/cluttered backgrounds.

In:  ``DataConfig`` (dataset, image_size, num_classes, train_size, test_size, data_seed).
Out: ``ImageData`` with 3-channel normalised float32 images; the same config gives bit-identical
tensors on a given machine and torch build (all randomness comes from generators seeded with
``data_seed``; across CPUs, float rounding in the renderer's matmul may differ in the last bit).

Digits: scikit-learn's 1,797 real handwritten 8x8 digits (values 0..16), replicated to 3 channels,
split by a seeded permutation into 1,400 train / 397 test; optional bilinear resize.

Shapes: an offline analog of the paper's ObjectNet3D experiment (section 3, clean vs cluttered
backgrounds): ``SHAPE_NAMES`` lists 16 classes, ``num_classes`` (default 10) takes the first k.
Each image is one shape with random position, scale, rotation, aspect and grey level. The clean
and cluttered sets share the foreground exactly (same generator stream); cluttered composites it
over a texture of smooth noise, lines and blobs from a separate stream, in the same intensity
range as the shapes. ``render_shapes`` returns the unnormalised pieces (foreground, alpha,
background) so that this can be checked.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from claimbench.config import DataConfig
from claimbench.data.base import DatasetError, ImageData, normalise
from claimbench.data.catalog import (  # noqa: F401  (re-exported: one definition of the sizes)
    DIGITS_TRAIN,
    SHAPES_DEFAULT_CLASSES,
    SHAPES_DEFAULT_SIZE,
    SHAPES_DEFAULT_TEST,
    SHAPES_DEFAULT_TRAIN,
)


SHAPE_NAMES = (
    "circle", "square", "triangle", "cross", "ring", "diamond", "bars", "l_shape",
    "star", "ellipse", "hexagon", "half_disc", "crescent", "t_shape", "dumbbell", "frame",
)
# Rotation stays within +-20 degrees: with free rotation a square is a diamond and the classes
# would no longer be separable by shape alone.
MAX_ROTATION = math.radians(20)
# Clean images sit on a plain black canvas; shape grey levels start well above it.
CLEAN_BACKGROUND = 0.0
GREY_RANGE = (0.35, 1.0)

_SPLITS = {"train": 0, "test": 1}
_STREAMS = {"labels": 0, "foreground": 1, "background": 2}


def load_digits_data(cfg: DataConfig) -> ImageData:
    """sklearn digits as (N, 3, s, s) with s = cfg.image_size or 8; 1,400 train / 397 test."""
    images, target = _sklearn_digits()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))  # (1797, 8, 8), 0..16
    y = torch.from_numpy(np.asarray(target, dtype=np.int64))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(cfg.data_seed))
    x = x[perm][:, None].expand(-1, 3, -1, -1).contiguous()
    y = y[perm]
    if cfg.image_size is not None and cfg.image_size != x.shape[-1]:
        x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                          align_corners=False, antialias=cfg.image_size < x.shape[-1])
    train_x, test_x = normalise(x[:DIGITS_TRAIN], x[DIGITS_TRAIN:])
    return ImageData(
        name=cfg.dataset,
        train_x=train_x,
        train_y=y[:DIGITS_TRAIN].clone(),
        test_x=test_x,
        test_y=y[DIGITS_TRAIN:].clone(),
        num_classes=10,
    )


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` gives them: images (1797, 8, 8) and labels.

    Read from the file scikit-learn ships, parsed as ``load_digits`` parses it, without importing
    scikit-learn: the import alone takes ~1.5 s, paid by every process that trains on digits.
    Where the file is not at its usual place, ``load_digits`` itself."""
    spec = importlib.util.find_spec("sklearn")
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    csv = Path(where[0]) / "datasets" / "data" / "digits.csv.gz" if where else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError(f"digits: the embedded digits come with scikit-learn, which does not import ({e})") from e
    digits = load_digits()
    return digits.images, digits.target


@dataclass(frozen=True)
class ShapesRender:
    """One split of shape images before normalisation; all float32 in [0, 1], (N, H, W)."""

    images: torch.Tensor  # foreground + (1 - alpha) * background
    labels: torch.Tensor  # int64 (N,)
    foreground: torch.Tensor  # alpha * grey level (premultiplied)
    alpha: torch.Tensor  # shape coverage per pixel (anti-aliased)
    background: torch.Tensor


def shapes_sizes(cfg: DataConfig) -> tuple[int, int, int, int]:
    """(num_classes, image_size, train_size, test_size) with the documented defaults filled in."""
    k = cfg.num_classes if cfg.num_classes is not None else SHAPES_DEFAULT_CLASSES
    if not 2 <= k <= len(SHAPE_NAMES):
        raise DatasetError(f"shapes: num_classes must be in 2..{len(SHAPE_NAMES)}, got {k}")
    side = cfg.image_size if cfg.image_size is not None else SHAPES_DEFAULT_SIZE
    n_train = cfg.train_size if cfg.train_size is not None else SHAPES_DEFAULT_TRAIN
    n_test = cfg.test_size if cfg.test_size is not None else SHAPES_DEFAULT_TEST
    return k, side, n_train, n_test


def load_shapes_data(cfg: DataConfig, cluttered: bool) -> ImageData:
    """Synthetic shapes (N, 3, s, s), s = cfg.image_size or 16; see the module docstring."""
    k, side, n_train, n_test = shapes_sizes(cfg)
    train = render_shapes(n_train, k, side, cfg.data_seed, "train", cluttered)
    test = render_shapes(n_test, k, side, cfg.data_seed, "test", cluttered)
    train_x, test_x = normalise(
        train.images[:, None].expand(-1, 3, -1, -1), test.images[:, None].expand(-1, 3, -1, -1)
    )
    return ImageData(
        name=cfg.dataset,
        train_x=train_x.contiguous(),
        train_y=train.labels,
        test_x=test_x.contiguous(),
        test_y=test.labels,
        num_classes=k,
    )


def render_shapes(
    n: int, num_classes: int, side: int, data_seed: int, split: str, cluttered: bool
) -> ShapesRender:
    """Render one split. Labels and foreground depend only on (n, num_classes, side, seed, split)."""
    labels = _balanced_labels(n, num_classes, _generator(data_seed, split, "labels"))
    alpha, grey = _render_foreground(labels, side, _generator(data_seed, split, "foreground"))
    foreground = alpha * grey[:, None, None]
    if cluttered:
        background = _render_clutter(n, side, _generator(data_seed, split, "background"))
    else:
        background = torch.full((n, side, side), CLEAN_BACKGROUND)
    images = foreground + (1 - alpha) * background
    return ShapesRender(images, labels, foreground, alpha, background)


def _generator(data_seed: int, split: str, stream: str) -> torch.Generator:
    # SeedSequence mixes the three ids into well-separated seeds, so the train and test splits
    # and the label/foreground/background streams never share random numbers.
    seed = np.random.SeedSequence([data_seed, _SPLITS[split], _STREAMS[stream]]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(seed))


def _balanced_labels(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.arange(n, dtype=torch.int64) % k
    return labels[torch.randperm(n, generator=gen)]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _render_foreground(labels: torch.Tensor, side: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage (N, side, side) and grey level (N,) of one shape per image."""
    n = labels.shape[0]
    # All parameters are drawn for every image up front, so an image's shape does not depend
    # on how the others are grouped by class below.
    centre = _uniform(2 * n, 0.32, 0.68, gen).view(n, 2)
    scale = _uniform(n, 0.22, 0.34, gen)
    angle = _uniform(n, -MAX_ROTATION, MAX_ROTATION, gen)
    aspect = _uniform(n, math.log(0.8), math.log(1.25), gen).exp()
    grey = _uniform(n, *GREY_RANGE, gen)

    # Supersampled hard masks averaged down give anti-aliased edges, which matter at 16x16.
    ss = 2 if side <= 32 else 1
    fine = side * ss
    # Pixel -> shape frame is affine: [u, v] = [x, y, 1] @ coef, one batched matmul per class.
    cos, sin = angle.cos(), angle.sin()
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    cx, cy = centre[:, 0], centre[:, 1]
    coef = torch.stack([
        torch.stack([cos / sx, -sin / sy], 1),
        torch.stack([sin / sx, cos / sy], 1),
        torch.stack([-(cos * cx + sin * cy) / sx, (sin * cx - cos * cy) / sy], 1),
    ], 1)  # (n, 3, 2)
    alpha = torch.empty(n, side, side)
    grid = _pixel_grid(fine)
    for cls in range(len(_SHAPES)):
        idx = (labels == cls).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        uv = torch.matmul(grid, coef[idx]).view(idx.numel(), fine, fine, 2)
        mask = _SHAPES[cls](uv[..., 0], uv[..., 1]).float()
        alpha[idx] = F.avg_pool2d(mask[:, None], ss).squeeze(1) if ss > 1 else mask
    return alpha, grey


def _pixel_grid(side: int) -> torch.Tensor:
    """(side*side, 3) rows [x, y, 1] of pixel centres in [0, 1], row-major (y outer)."""
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(side * side)], 1)


def _render_clutter(n: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth noise plus random lines and blobs, grey levels overlapping the shapes' range."""
    coarse = torch.rand(n, 1, 4, 4, generator=gen) * 0.6
    bg = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False).squeeze(1)
    grid = _pixel_grid(side).T  # (3, P)
    lines, blobs = 4, 3
    # Lines: (s, q) = position along the segment in [0, 1] and perpendicular distance in pixels.
    a = torch.rand(n, lines, 2, generator=gen)
    d = torch.rand(n, lines, 2, generator=gen) - a
    length2 = (d * d).sum(-1).clamp_min(1e-4)
    length = length2.sqrt()
    line_coef = torch.stack([
        torch.stack([d[..., 0] / length2, d[..., 1] / length2, -(a * d).sum(-1) / length2], -1),
        torch.stack([-d[..., 1] / length, d[..., 0] / length, (a[..., 0] * d[..., 1] - a[..., 1] * d[..., 0]) / length], -1) * side,
    ], -2)  # (n, lines, 2, 3)
    half_width = _uniform(n * lines, 0.3, 0.7, gen).view(n, lines, 1)
    # Blobs: ellipse frame coordinates, inside where u^2 + v^2 <= 1.
    c = torch.rand(n, blobs, 2, generator=gen)
    r = _uniform(n * blobs * 2, 0.05, 0.18, gen).view(n, blobs, 2)
    zero = torch.zeros(n, blobs)
    blob_coef = torch.stack([
        torch.stack([1 / r[..., 0], zero, -c[..., 0] / r[..., 0]], -1),
        torch.stack([zero, 1 / r[..., 1], -c[..., 1] / r[..., 1]], -1),
    ], -2)
    level = _uniform(n * (lines + blobs), 0.2, 1.0, gen).view(n, lines + blobs, 1, 1)
    line_sq = torch.matmul(line_coef, grid)  # (n, lines, 2, P)
    blob_uv = torch.matmul(blob_coef, grid)
    s, q = line_sq[:, :, 0], line_sq[:, :, 1]
    on_line = (q.abs() <= half_width) & (s >= 0) & (s <= 1)
    in_blob = blob_uv.square().sum(2) <= 1
    painted = torch.cat([on_line, in_blob], 1).view(n, lines + blobs, side, side)
    for i in range(lines + blobs):  # later primitives occlude earlier ones
        bg = torch.where(painted[:, i], level[:, i], bg)
    return bg


# --- shape masks in the shape's own frame: u right, v down, the shape fills about [-1, 1]^2 ---


def _circle(u, v):
    return u * u + v * v <= 1


def _square(u, v):
    return torch.maximum(u.abs(), v.abs()) <= 0.8


def _triangle(u, v):
    return (v <= 0.5) & (v >= -1 + math.sqrt(3) * u.abs())


def _cross(u, v):
    return ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1) & (r2 >= 0.55**2)


def _diamond(u, v):
    return u.abs() + v.abs() <= 1


def _bars(u, v):
    stripe = torch.floor((v + 1) / 0.4)
    return (u.abs() <= 0.9) & (v.abs() < 1) & (stripe.remainder(2) == 0)


def _l_shape(u, v):
    return ((u >= -0.8) & (u <= -0.3) & (v.abs() <= 0.9)) | ((u.abs() <= 0.8) & (v >= 0.4) & (v <= 0.9))


def _star(u, v):
    theta = torch.atan2(v, u)
    t = (theta * 5 / (2 * math.pi)).remainder(1.0)
    radius = 0.42 + 0.63 * (2 * t - 1).abs()
    return u * u + v * v <= radius * radius


def _ellipse(u, v):
    return u * u + (v / 0.45) ** 2 <= 1


def _hexagon(u, v):
    h = 0.9
    return (v.abs() <= h) & ((math.sqrt(3) / 2 * u.abs() + 0.5 * v.abs()) <= h)


def _half_disc(u, v):
    return (u * u + (v - 0.5) ** 2 <= 1) & (v <= 0.5)


def _crescent(u, v):
    return (u * u + v * v <= 1) & ((u - 0.5) ** 2 + v * v > 0.8**2)


def _t_shape(u, v):
    return ((u.abs() <= 0.9) & (v >= -0.9) & (v <= -0.45)) | ((u.abs() <= 0.25) & (v.abs() <= 0.9))


def _dumbbell(u, v):
    ends = ((u - 0.6) ** 2 + v * v <= 0.4**2) | ((u + 0.6) ** 2 + v * v <= 0.4**2)
    return ends | ((u.abs() <= 0.6) & (v.abs() <= 0.15))


def _frame(u, v):
    m = torch.maximum(u.abs(), v.abs())
    return (m <= 0.85) & (m >= 0.5)


_SHAPES = (
    _circle, _square, _triangle, _cross, _ring, _diamond, _bars, _l_shape,
    _star, _ellipse, _hexagon, _half_disc, _crescent, _t_shape, _dumbbell, _frame,
)
assert len(_SHAPES) == len(SHAPE_NAMES)
