"""Dataset loaders: tiny fabricated datasets in the real on-disk formats, plus the embedded data."""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from claimbench.config import DataConfig
from claimbench.data import DatasetError, ImageData, load_dataset
from claimbench.data import cifar as cifar_mod
from claimbench.data.base import normalise
from claimbench.data.embedded import SHAPE_NAMES, load_digits_data, render_shapes
from claimbench.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderImageData
from tests.helpers import make_cifar_archive


def assert_normalised(data: ImageData) -> None:
    mean = data.train_x.mean(dim=(0, 2, 3))
    std = data.train_x.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4), mean
    assert torch.allclose(std, torch.ones_like(std), atol=1e-3), std
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64


# --- CIFAR ---------------------------------------------------------------------------------


def test_cifar10_from_archive_then_from_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    archive, (tx, ty), (vx, vy) = make_cifar_archive(root, "cifar10")
    data = load_dataset(DataConfig(dataset="cifar10"), root, download=False)
    assert (data.train_size, data.test_size, data.num_classes) == (20, 4, 10)
    assert data.train_x.shape == (20, 3, 32, 32) and data.image_size == 32 and data.in_channels == 3
    assert torch.equal(data.train_y, ty) and torch.equal(data.test_y, vy)
    want_train, want_test = normalise(tx, vx)
    assert torch.allclose(data.train_x, want_train) and torch.allclose(data.test_x, want_test)
    assert_normalised(data)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left behind

    archive.unlink()  # the extracted folder alone is enough from now on
    again = load_dataset(DataConfig(dataset="cifar10"), root, download=False)
    assert torch.equal(again.train_x, data.train_x)


def test_cifar100_fine_labels_and_resize(tmp_path, monkeypatch):
    _, (tx, ty), (vx, vy) = make_cifar_archive(tmp_path, "cifar100", per_file=6)
    monkeypatch.setenv("CLAIMBENCH_DATA", str(tmp_path))  # the default root
    data = load_dataset(DataConfig(dataset="cifar100", image_size=16), download=False)
    assert data.num_classes == 100
    assert data.train_x.shape == (6, 3, 16, 16) and data.test_x.shape == (6, 3, 16, 16)
    assert torch.equal(data.train_y, ty) and torch.equal(data.test_y, vy)
    assert_normalised(data)


def test_cifar_missing_without_download_names_the_directory(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset="cifar10"), tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg
    assert "cifar-10-python.tar.gz" in msg and "cifar-10-batches-py" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "CLAIMBENCH_DATA" in msg and "--data-root" in msg


def test_cifar_download_verifies_md5_and_renames(tmp_path, monkeypatch):
    made, (tx, ty), _ = make_cifar_archive(tmp_path, "cifar10")
    root = tmp_path / "root"
    fetched = []

    def fake_fetch(url, dest):
        fetched.append((url, dest))
        shutil.copyfile(made, dest)

    monkeypatch.setattr(cifar_mod, "_fetch", fake_fetch)
    good_md5 = hashlib.md5(made.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar_mod.SOURCES, "cifar10", replace(cifar_mod.SOURCES["cifar10"], md5=good_md5))
    data = load_dataset(DataConfig(dataset="cifar10"), root, download=True)
    assert torch.equal(data.train_y, ty)
    (url, dest), = fetched
    assert url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert dest.parent == root and dest.name != "cifar-10-python.tar.gz"  # a temporary name
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_cifar_download_with_bad_md5_raises_and_deletes(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_mod, "_fetch", lambda url, dest: dest.write_bytes(b"not a tarball"))
    with pytest.raises(DatasetError, match="md5"):
        load_dataset(DataConfig(dataset="cifar100"), tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_cifar_download_failure_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar_mod, "_fetch", offline)
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset="cifar10"), tmp_path, download=True)
    assert "no network" in str(e.value) and str(tmp_path) in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_cifar_corrupt_local_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="cannot extract"):
        load_dataset(DataConfig(dataset="cifar10"), tmp_path, download=False)
    assert not (tmp_path / "cifar-10-batches-py").exists()


# --- TinyImageNet --------------------------------------------------------------------------


def _save_image(path: Path, colour: tuple[int, int, int], size=(64, 64), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if mode == "L":
        img = img.convert("L")
    img.save(path, quality=95)


TINY_WNIDS = ["n03", "n01", "n02"]  # deliberately unsorted in wnids.txt


def _colour(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 200 - 60 * label, 30 * label + 10)


def test_tinyimagenet_official_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    classes = sorted(TINY_WNIDS)
    for label, wnid in enumerate(classes):
        for j in range(2):
            _save_image(base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", _colour(label))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # present in the real archive
    _save_image(base / "train" / "n02" / "images" / "n02_gray.JPEG", (90, 90, 90), mode="L")
    val = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01")]
    for name, wnid in val:
        _save_image(base / "val" / "images" / name, _colour(classes.index(wnid)))
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in val)
    )
    (base / "test" / "images").mkdir(parents=True)  # unlabelled in the real archive: ignored

    data = load_dataset(DataConfig(dataset="tinyimagenet"), tmp_path)
    assert data.num_classes == 3
    assert data.train_x.shape == (7, 3, 64, 64) and data.test_x.shape == (3, 3, 64, 64)
    assert data.train_y.tolist() == [0, 0, 1, 1, 1, 2, 2]  # n02_gray sorts after n02_1
    assert data.test_y.tolist() == [1, 2, 0]
    assert_normalised(data)
    # Images of the same colour decode to (nearly) the same pixels, so labels follow images.
    assert torch.allclose(data.test_x[0], data.train_x[2], atol=0.05)
    assert torch.allclose(data.test_x[2], data.train_x[0], atol=0.05)

    small = load_dataset(DataConfig(dataset="tinyimagenet", image_size=32), tmp_path)
    assert small.train_x.shape == (7, 3, 32, 32)


def test_tinyimagenet_imagefolder_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    for label, cls in enumerate(["cat", "dog"]):
        for j in range(3):
            _save_image(base / "train" / cls / f"{j}.png", _colour(label), size=(48, 40))
        _save_image(base / "val" / cls / "v.png", _colour(label))
    data = load_dataset(DataConfig(dataset="tinyimagenet"), tmp_path)
    assert data.train_x.shape == (6, 3, 64, 64) and data.test_y.tolist() == [0, 1]
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]


def test_tinyimagenet_missing_or_wrong_layout(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset="tinyimagenet"), tmp_path)
    assert str(tmp_path / "tiny-imagenet-200") in str(e.value) and "wnids.txt" in str(e.value)
    (tmp_path / "tiny-imagenet-200" / "train").mkdir(parents=True)
    (tmp_path / "tiny-imagenet-200" / "train" / "stray.JPEG").write_bytes(b"")
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset(DataConfig(dataset="tinyimagenet"), tmp_path)


# --- ImageNet ------------------------------------------------------------------------------


def _imagenet_tree(root: Path) -> None:
    # Left half black, right half coloured: crops and flips are then visible in the pixels.
    for label, wnid in enumerate(["n001", "n000"][::-1]):
        for split, sizes in (("train", [(300, 260), (260, 340), (280, 280)]), ("val", [(290, 270)])):
            for j, size in enumerate(sizes):
                img = np.zeros((size[1], size[0], 3), np.uint8)
                img[:, size[0] // 2 :] = _colour(label)
                path = root / "imagenet" / split / wnid / f"{wnid}_{j}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path, quality=95)


def test_imagenet_folder_batches(tmp_path):
    _imagenet_tree(tmp_path)
    data = load_dataset(DataConfig(dataset="imagenet"), tmp_path)
    assert isinstance(data, FolderImageData)
    assert (data.train_size, data.test_size, data.num_classes) == (6, 2, 2)
    assert (data.in_channels, data.image_size) == (3, 224)
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1] and data.test_y.tolist() == [0, 1]
    data = data.to("cpu")
    index = torch.tensor([4, 0, 2])
    x, y = data.train_batch(index, None)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == [1, 0, 0]
    x2, _ = data.train_batch(index, None)
    assert torch.equal(x, x2)  # crops are seeded by the indices
    xf, _ = data.train_batch(index, torch.tensor([True, False, True]))
    assert torch.equal(xf[0], x[0].flip(2)) and torch.equal(xf[1], x[1])
    # The left columns of an unflipped crop are black, i.e. -mean/std after normalisation.
    black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))
    assert torch.allclose(x[:, :, :, 0].mean(dim=(0, 2)), black, atol=0.05)
    batches = list(data.eval_batches("test", 1))
    assert len(batches) == 2 and batches[0][0].shape == (1, 3, 224, 224)
    # Centre crop of a 256-high image: the colour boundary sits in the middle columns.
    centre = batches[0][0][0, 0, 112]
    assert centre[:100].max() < centre[130:].min()

    small = load_dataset(DataConfig(dataset="imagenet", image_size=64), tmp_path)
    assert small.train_batch(index, None)[0].shape == (3, 3, 64, 64)


def test_imagenet_missing_names_layout(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset="imagenet"), tmp_path, download=True)
    assert str(tmp_path / "imagenet") in str(e.value) and "train/<wnid>" in str(e.value)
    (tmp_path / "imagenet" / "train" / "n0").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files"):
        load_dataset(DataConfig(dataset="imagenet"), tmp_path)


# --- embedded data -------------------------------------------------------------------------


def test_digits_split_and_determinism():
    data = load_digits_data(DataConfig(dataset="digits"))
    assert (data.train_size, data.test_size, data.num_classes) == (1400, 397, 10)
    assert data.train_x.shape == (1400, 3, 8, 8)
    assert set(data.train_y.tolist()) == set(range(10))
    assert_normalised(data)
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # replicated grey
    again = load_dataset(DataConfig(dataset="digits"))
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    other = load_dataset(DataConfig(dataset="digits", data_seed=1, image_size=16))
    assert other.train_x.shape == (1400, 3, 16, 16)
    assert not torch.equal(other.train_y, data.train_y)
    assert sorted(torch.cat([other.train_y, other.test_y]).tolist()) == sorted(
        torch.cat([data.train_y, data.test_y]).tolist()
    )


def test_shapes_defaults():
    clean = load_dataset(DataConfig(dataset="shapes_clean"))
    assert (clean.train_size, clean.test_size, clean.num_classes) == (4000, 1000, 10)
    assert clean.train_x.shape == (4000, 3, 16, 16)
    assert torch.bincount(clean.train_y).tolist() == [400] * 10
    assert_normalised(clean)


def test_shapes_are_deterministic_and_match_the_render():
    cfg = DataConfig(dataset="shapes_cluttered", train_size=500, test_size=100, data_seed=7)
    data, again = load_dataset(cfg), load_dataset(cfg)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(data, name), getattr(again, name)), name
    # The loader is the render, normalised and replicated to 3 channels.
    train = render_shapes(500, 10, 16, 7, "train", cluttered=True)
    test = render_shapes(100, 10, 16, 7, "test", cluttered=True)
    want_train, want_test = normalise(train.images[:, None], test.images[:, None])
    assert torch.equal(data.train_y, train.labels)
    assert torch.allclose(data.train_x[:, 1:2], want_train, atol=1e-5)
    assert torch.allclose(data.test_x[:, 2:], want_test, atol=1e-5)
    clean = load_dataset(replace(cfg, dataset="shapes_clean"))
    assert torch.equal(clean.train_y, data.train_y) and torch.equal(clean.test_y, data.test_y)
    assert_normalised(clean)
    assert_normalised(data)


def test_shapes_options():
    cfg = DataConfig(dataset="shapes_cluttered", num_classes=len(SHAPE_NAMES), train_size=64,
                     test_size=32, image_size=24, data_seed=3)
    data = load_dataset(cfg)
    assert data.train_x.shape == (64, 3, 24, 24) and data.test_x.shape == (32, 3, 24, 24)
    assert set(data.train_y.tolist()) == set(range(len(SHAPE_NAMES)))
    # The training split does not depend on the test split's size, nor the seed on nothing.
    other = load_dataset(replace(cfg, test_size=10))
    assert torch.equal(other.train_x, data.train_x)
    assert not torch.equal(load_dataset(replace(cfg, data_seed=4)).train_x, data.train_x)
    with pytest.raises(DatasetError, match="num_classes"):
        load_dataset(replace(cfg, num_classes=len(SHAPE_NAMES) + 1))


def test_clean_and_cluttered_differ_only_in_background():
    clean = render_shapes(600, 10, 16, 5, "test", cluttered=False)
    busy = render_shapes(600, 10, 16, 5, "test", cluttered=True)
    assert torch.equal(clean.labels, busy.labels)
    assert torch.equal(clean.alpha, busy.alpha) and torch.equal(clean.foreground, busy.foreground)
    solid = clean.alpha == 1
    empty = clean.alpha == 0
    assert solid.float().mean() > 0.05 and empty.float().mean() > 0.4
    assert torch.equal(clean.images[solid], busy.images[solid])
    assert torch.all(clean.images[empty] == 0)
    assert (busy.images[empty] != 0).float().mean() > 0.9
    # Edge pixels blend the same premultiplied foreground over each background.
    assert torch.allclose(busy.images - (1 - busy.alpha) * busy.background, clean.images, atol=1e-6)
    # Similar intensity range, so clutter cannot be removed by thresholding.
    assert busy.background.max() > 0.9 and busy.background[empty].mean() > 0.15


def test_cluttered_shapes_are_harder():
    def one_nn_accuracy(cluttered: bool) -> float:
        train = render_shapes(1500, 10, 16, 0, "train", cluttered)
        test = render_shapes(300, 10, 16, 0, "test", cluttered)
        nearest = torch.cdist(test.images.flatten(1), train.images.flatten(1)).argmin(1)
        return (train.labels[nearest] == test.labels).float().mean().item()

    clean, busy = one_nn_accuracy(False), one_nn_accuracy(True)
    assert clean > 0.6 and busy < clean - 0.3, (clean, busy)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset(DataConfig(dataset="mnist"))


def test_imagenet_prefetch_decodes_in_the_background_and_changes_nothing(tmp_path, monkeypatch):
    import threading

    _imagenet_tree(tmp_path)
    data = load_dataset(DataConfig(dataset="imagenet"), tmp_path).to("cpu")
    index, flip = torch.tensor([5, 1, 3]), torch.tensor([False, True, False])
    want, want_y = data.train_batch(index, flip)
    threads = []
    original = FolderImageData._decode_host

    def spy(self, files, offsets):
        threads.append(threading.current_thread().name)
        return original(self, files, offsets)

    monkeypatch.setattr(FolderImageData, "_decode_host", spy)
    data.prefetch(index)
    data.prefetch(index)  # announced twice: decoded once
    got, got_y = data.train_batch(index, flip)
    assert torch.equal(got, want) and torch.equal(got_y, want_y)
    assert len(threads) == 1 and threads[0].startswith("claimbench-prefetch")
    # Unannounced batches still decode in the caller's thread; eval prefetches its next batch.
    data.train_batch(torch.tensor([0]), None)
    assert threads[-1] == threading.current_thread().name
    evals = list(data.eval_batches("train", 4))
    assert [len(y) for _, y in evals] == [4, 2] and torch.equal(torch.cat([y for _, y in evals]), data.train_y)
    # Prefetched batches that are never used are dropped beyond the depth limit.
    for i in range(5):
        data.prefetch(torch.tensor([i]))
    assert len(data._ahead) <= 2


def test_the_loop_announces_each_next_imagenet_batch_and_prefetching_changes_nothing(tmp_path, monkeypatch):
    """Training on image folders decodes batch t+1 in the background during step t (all but the
    first batch of each epoch), from host indices, and trains exactly as without prefetching."""
    import threading

    from claimbench.runconfig import run_config_from_dict
    from claimbench.train.graphs import use_cuda_graphs
    from claimbench.train.loop import train_models

    _imagenet_tree(tmp_path)
    cfg = run_config_from_dict({
        "model": {"width": 0.0625, "fc_hidden": [8]},
        "data": {"dataset": "imagenet", "image_size": 64},
        "optim": {"name": "adam", "lam": 1e-3},
        "train": {"unit": "steps", "phases": [6], "batch_size": 2, "snapshots": 1},
    })
    data = load_dataset(cfg.data, tmp_path).to("cpu")
    assert data.decodes_on_host and not use_cuda_graphs([cfg], torch.device("cuda"), True, data)
    original = FolderImageData._decode_host
    decoded = []  # (thread name, indices' file names)

    def spy(self, files, offsets):
        decoded.append(threading.current_thread().name)
        return original(self, files, offsets)

    monkeypatch.setattr(FolderImageData, "_decode_host", spy)
    (ahead,) = train_models([cfg], data, torch.device("cpu"))
    # 6 images at batch 2: 3 steps an epoch, 2 epochs; each epoch's first batch is decoded in the
    # step itself, the other two in the prefetch thread.
    training = [t for t in decoded if "eval" not in t]
    assert len(training) == 6
    assert sum(t.startswith("claimbench-prefetch") for t in training) == 4

    monkeypatch.setattr(FolderImageData, "prefetch", lambda self, index, flip=None: None)
    (plain,) = train_models([cfg], data, torch.device("cpu"))
    for (k, a), (_, b) in zip(ahead.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert ahead.history["loss"] == plain.history["loss"]


def test_an_imagenet_batch_reaches_the_device_in_two_copies_and_builds_nothing_from_host_data(tmp_path):
    """Traced on the meta device: the crops and the labels are the only host-device copies of a
    batch (pinned and not waited for on CUDA); the flips are applied on the host and the
    normalisation constants are made once, so no step builds a tensor from host data."""
    from claimbench.train.profile import StepTrace, _FactoryRecorder, _Recorder

    _imagenet_tree(tmp_path)
    host = load_dataset(DataConfig(dataset="imagenet"), tmp_path)
    index, flip = torch.tensor([[5, 1, 3], [0, 2, 4]]), torch.tensor([[False, True, False], [True, True, False]])
    want_x, want_y = host.to("cpu").train_batch(index, flip)
    # The flips mirror the width, as on the device before: the same batch as a flip there.
    plain_x, _ = host.to("cpu").train_batch(index, None)
    assert torch.equal(want_x, torch.where(flip[..., None, None, None], plain_x.flip(-1), plain_x))
    assert want_x.shape[:2] == index.shape and torch.equal(want_y, host.train_y[index])
    data = host.to("meta")
    data.train_batch(index, flip)  # the first batch makes the constants
    trace = StepTrace(runs=2)
    with _FactoryRecorder(trace), _Recorder(trace):
        data.train_batch(index, flip)
    assert len(trace.copies) == 2, trace.copies
    assert not [c for c in trace.blocking_copies if "from host data" in c], trace.blocking_copies
    assert trace.syncs == []


def test_digits_read_from_scikit_learns_file_are_load_digits_and_without_the_file_load_digits_is_used(monkeypatch):
    import importlib.util

    from sklearn.datasets import load_digits

    import claimbench.data.embedded as embedded

    reference = load_digits()
    images, target = embedded._sklearn_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    images, target = embedded._sklearn_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)


@pytest.mark.parametrize("broken, says", [
    (lambda a: a.pop("test_y"), "load returned no test_y"),
    (lambda a: a.update(train_x=a["train_x"][:, :1]), "train_x is torch.float32 (10, 1, 4, 4), expected float images (N, 3, 4, 4)"),
    (lambda a: a.update(test_x=(a["test_x"] * 255).astype(np.uint8)), "test_x is torch.uint8"),
    (lambda a: a.update(train_y=a["train_y"].astype(np.float32)), "train_y is torch.float32 (10,), expected 10 integer labels"),
    (lambda a: a.update(test_y=a["test_y"][:3]), "test_y is torch.int64 (3,), expected 6 integer labels"),
    (lambda a: a.update(train_y=a["train_y"] + 2), "train_y has labels outside 0..2 (3 classes declared)"),
    (lambda a: a.update(train_x=a["train_x"][:8], train_y=a["train_y"][:8]), "8 training images, 10 declared"),
])
def test_a_plugin_datasets_arrays_are_checked_against_what_it_declares(broken, says, tmp_path):
    from claimbench.data import load_plugin_data
    from claimbench.plugins import DatasetPlugin

    def load(root, seed):
        rng = np.random.default_rng(seed)
        arrays = {"train_x": rng.random((10, 3, 4, 4), dtype=np.float32), "train_y": np.arange(10) % 3,
                  "test_x": rng.random((6, 3, 4, 4), dtype=np.float32), "test_y": np.arange(6) % 3}
        broken(arrays)
        return arrays

    plugin = DatasetPlugin(name="tiny", load=load, train_size=10, image_size=4, channels=3, classes=3)
    with pytest.raises(DatasetError, match=re.escape(f"plug-in dataset tiny: {says}")):
        load_plugin_data(plugin, DataConfig(dataset="tiny"), tmp_path)
    assert load_plugin_data(replace(plugin, load=lambda root, seed: {
        "train_x": np.zeros((10, 3, 4, 4), np.float32), "train_y": np.arange(10) % 3,
        "test_x": np.zeros((6, 3, 4, 4), np.float32), "test_y": np.arange(6) % 3}), DataConfig(dataset="tiny"),
        tmp_path).num_classes == 3

