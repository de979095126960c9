"""Planning dedups runs across claims; reports render from the cache alone."""

import shutil
from pathlib import Path

from claimbench.cache import RunStore, run_key
from claimbench.plan import plan_runs
from claimbench.plan.estimate import data_shape
from claimbench.report import render_reports
from claimbench.report.mdtable import escape_cell
from claimbench.spec.claims import load_claims
from claimbench.cache import RunRecord
from tests.helpers import REPO


def copy_claims(tmp_path: Path, names: list[str]) -> list[Path]:
    dest = tmp_path / "claims"
    shutil.copytree(REPO / "claims" / "_bases", dest / "_bases")
    shutil.copytree(REPO / "claims" / "tables", dest / "tables")  # full tiers name table cells
    return [Path(shutil.copy(REPO / "claims" / n, dest / n)) for n in names]


def test_shared_runs_are_planned_once(tmp_path):
    specs = load_claims(copy_claims(tmp_path, ["adam_l2_vs_wd.yaml", "pruning_keeps_error.yaml"]))
    plan = plan_runs(specs, "smoke", RunStore(tmp_path / "cache"))
    # adam-l2-vs-wd: adam_l2 x3 + adam_wd x3; pruning-keeps-error: adam_l2 x3 (the same runs).
    assert len(plan.runs) == 6
    shared = [r for r in plan.runs if len(r.claims) == 2]
    assert len(shared) == 3 and all(set(r.claims) == {"adam-l2-vs-wd", "pruning-keeps-error"} for r in shared)
    assert all(r.steps == 3000 and r.flops > 0 and not r.cached for r in plan.runs)
    full = plan_runs(specs, "full", RunStore(tmp_path / "cache"))
    assert all(r.steps == 406_250 for r in full.runs)


def test_data_shapes_without_loading_match_the_loaders():
    from claimbench.config import DataConfig, RunConfig
    from claimbench.data import load_dataset

    for dataset in ("digits", "shapes_clean"):
        cfg = RunConfig(data=DataConfig(dataset=dataset))
        data = load_dataset(cfg.data)
        assert data_shape(cfg) == (data.train_size, data.image_size, data.in_channels, data.num_classes)


def test_report_renders_verdicts_from_the_cache(tmp_path):
    specs = load_claims(copy_claims(tmp_path, ["adam_l2_vs_wd.yaml"]))
    store = RunStore(tmp_path / "cache")
    for group, sparsity in (("adam_l2", [50.0, 52.0, 49.0]), ("adam_wd", [20.0, 22.0, 25.0])):
        for cfg, s in zip(specs[0].tier("smoke").groups[group].points[0].configs, sparsity):
            metrics = {"sparsity_gamma": s, "test_error": 1.5, "sparsity_act": s - 1, "pruned_test_error": 1.5,
                       "layer_sparsity_gamma": [0, 0, 5, 60, 70, 55, 70], "diverged_at": None}
            store.put(run_key(cfg), RunRecord(cfg, metrics, {}, {"device": "cpu", "torch": "x", "train_wall_s": 1}))
    out = tmp_path / "reports"
    verdicts = render_reports(specs, "smoke", store, out)
    assert [v.status for v in verdicts] == ["reproduced"]
    index = (out / "index.md").read_text()
    assert "[adam-l2-vs-wd](adam-l2-vs-wd.md)" in index and "reproduced" in index
    assert escape_cell("adam_l2 sparsity_gamma: 50.3 ± 1.5 (n=3)") in index  # a table cell, escaped
    page = (out / "adam-l2-vs-wd.md").read_text()
    assert "paper 70 |" in page and "paired t-test over seeds one-sided p" in page  # the paper's number as the claim types it; L2 and WD trained on the same seeds
    assert (out / "adam-l2-vs-wd-1-layers.png").stat().st_size > 1000
    assert "6 distinct runs" in (out / "runs.md").read_text()


def test_plan_imports_no_torch():
    """Planning prices runs from configs alone (claimbench.netshape, claimbench.data.catalog)."""
    import subprocess
    import sys

    code = "import sys, claimbench.plan; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('claimbench.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'torch'" not in out, out
    assert "'claimbench.plan'" in out


def test_netshape_matches_the_models():
    """The torch-free layout prices what the models build: conv parameters counted on the built
    network's weights, FLOPs counted by torch on a forward pass (meta device, no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from claimbench.config import ModelConfig
    from claimbench.netcost import conv_param_count, flops_per_image
    from claimbench.netshape import net_spec
    from claimbench.train.models import build_model

    for arch, dataset, side, classes in (("basicnet", "cifar10", 32, 10), ("basicnet", "imagenet", 224, 1000),
                                         ("vgg16", "cifar100", 32, 100), ("vgg19", "tinyimagenet", 64, 200)):
        for cfg in (ModelConfig(arch=arch), ModelConfig(arch=arch, width=0.5, c1_channels=64)):
            spec = net_spec(cfg, 3, side, classes, dataset)
            with torch.device("meta"):
                model = build_model(cfg, 3, side, classes, dataset).eval()
            assert sum(b.conv.weight.numel() for b in model.blocks) == conv_param_count(spec)
            with FlopCounterMode(display=False) as counter:
                out = model(torch.empty(1, 3, side, side, device="meta"))
            assert out.shape == (1, classes)
            assert counter.get_total_flops() == flops_per_image(spec, side), (arch, dataset, cfg)
    assert conv_param_count(net_spec(ModelConfig(), 3, 32, 10, "cifar10")) == 4_649_664


def test_every_dataset_size_the_plan_assumes_agrees_with_its_loader():
    """The published datasets cannot be loaded here: their planned shapes are pinned against the
    loaders' own constants and the published sizes (CIFAR 50,000 train, TinyImageNet 500 per class
    of 200, ImageNet-1k 1,281,167)."""
    from claimbench.config import DataConfig, RunConfig
    from claimbench.config import DATASET_SHAPES
    from claimbench.data.cifar import SOURCES
    from claimbench.data.folder import IMAGENET_CROP, TINY_SIZE

    assert set(DATASET_SHAPES) == {"digits", "shapes_clean", "shapes_cluttered", "cifar10", "cifar100",
                                   "tinyimagenet", "imagenet"}
    for name in ("cifar10", "cifar100"):
        assert DATASET_SHAPES[name] == (50000, 32, 3, SOURCES[name].num_classes)
    assert DATASET_SHAPES["tinyimagenet"] == (200 * 500, TINY_SIZE, 3, 200)
    assert DATASET_SHAPES["imagenet"] == (1_281_167, IMAGENET_CROP, 3, 1000)
    assert data_shape(RunConfig(data=DataConfig(dataset="imagenet", image_size=64))) == (1_281_167, 64, 3, 1000)
