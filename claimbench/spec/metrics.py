"""The metric catalogue: every name a claim may check or give a paper number for.

In:  nothing (declarations only; no torch).
Out: ``RUN_METRICS`` (what ``claimbench.measure.measure_model`` plus the training loop record
for a run) and ``SIMULATION_METRICS`` (what ``claimbench.simulate.low_gradient.simulation_record`` computes
for a low-gradient simulation), each a name -> ``Metric`` mapping; ``metric_catalogue`` adds,
for runs of registered trainers (``train.trainer``), the metrics those trainers declare.

This is the one list the claim schema validates against. The producers are pinned to it by
tests (``tests/test_spec.py`` measures a tiny network and runs a tiny simulation and compares
their keys with these), so a metric added to the code and not here fails a test instead of
silently being unknown to ``claimbench validate``.

``shape`` says how a value is selected: ``scalar`` values are used as they are, ``per_layer``
lists need ``layers`` or ``layer``, ``per_feature`` lists (per layer, per feature) need ``layer``
and a ``stat``. ``lo``/``hi`` bound the values the metric can take (None: unbounded); they are
what ``claimbench validate --against-paper`` uses to find checks whose tolerance covers every value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from claimbench.config import ARCHS, RunConfig, dataset_shape, plugin_registry
from claimbench.netshape import net_spec

SCALAR, PER_LAYER, PER_FEATURE = "scalar", "per_layer", "per_feature"
# Top-5 errors are recorded only for more classes than this (claimbench.measure.metrics measures them
# so; tests/test_spec_hostile.py pins the two numbers together).
TOP5_MIN_CLASSES = 100


@dataclass(frozen=True)
class Metric:
    name: str
    shape: str
    lo: float | None
    hi: float | None
    doc: str
    more_classes_than: int | None = None  # recorded only for data with more classes than this
    label: str | None = None  # short name `claimbench run` prints it under (None: not printed there)
    table: bool = False  # a paper table reports it, so a table cell may name it
    trainer: str | None = None  # reported by this registered trainer, not measured by claimbench


def _catalogue(*metrics: Metric) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


PCT = (0.0, 100.0)

# In the order `claimbench run` prints them: the paper's (Table 1, then Table 2).
RUN_METRICS: dict[str, Metric] = _catalogue(
    Metric("train_loss", SCALAR, 0.0, None, "cross-entropy on the training set", label="train loss", table=True),
    Metric("test_loss", SCALAR, 0.0, None, "cross-entropy on the test set", label="test loss", table=True),
    Metric("test_error", SCALAR, *PCT, "test error %, top-1", label="test error %", table=True),
    Metric("test_error_top5", SCALAR, *PCT, "test error %, top-5 (more than 100 classes only)", TOP5_MIN_CLASSES,
           label="test error top-5 %", table=True),
    Metric("sparsity_act", SCALAR, *PCT, "% of features whose max activation is <= 1e-12",
           label="sparsity by activation (<=1e-12) %", table=True),
    Metric("sparsity_act_1e-4", SCALAR, *PCT, "% of features whose max activation is <= 1e-4",
           label="sparsity by activation (<=1e-4) %"),
    Metric("sparsity_gamma", SCALAR, *PCT, "% of features with |gamma| < 1e-3", label="sparsity by |gamma| (<1e-3) %",
           table=True),
    Metric("sparsity_gamma_1e-2", SCALAR, *PCT, "% of features with |gamma| < 1e-2",
           label="sparsity by |gamma| (<1e-2) %"),
    Metric("layer_sparsity_gamma", PER_LAYER, *PCT, "per conv layer: % with |gamma| < 1e-3", table=True),
    Metric("layer_sparsity_gamma_1e-2", PER_LAYER, *PCT, "per conv layer: % with |gamma| < 1e-2"),
    Metric("layer_sizes", PER_LAYER, 0.0, None, "features per conv layer"),
    Metric("layer_sparsity_act", PER_LAYER, *PCT, "per conv layer: sparsity by activation (<= 1e-12)", table=True),
    Metric("layer_sparsity_act_1e-4", PER_LAYER, *PCT, "per conv layer: sparsity by activation (<= 1e-4)"),
    Metric("universality", PER_FEATURE, *PCT, "per layer, per feature: universality %"),
    Metric("pruned_test_error", SCALAR, *PCT, "test error % after zeroing the |gamma| < 1e-3 features",
           label="test error after zeroing |gamma|<1e-3 %", table=True),
    Metric("pruned_test_error_top5", SCALAR, *PCT, "top-5 error % after zeroing (more than 100 classes only)",
           TOP5_MIN_CLASSES, label="top-5 error after zeroing %", table=True),
    Metric("pruned_features", SCALAR, 0.0, None, "features with |gamma| < 1e-3", label="features pruned", table=True),
    Metric("conv_params_total", SCALAR, 0.0, None, "conv parameters of the dense network"),
    Metric("conv_params_pruned_pct", SCALAR, *PCT, "% of conv parameters the zeroing removes",
           label="conv parameters pruned %", table=True),
    Metric("dense_params", SCALAR, 0.0, None, "parameters of the dense network", label="parameters (dense)"),
    Metric("slim_params", SCALAR, 0.0, None, "parameters of the slimmed network", label="parameters (slimmed)"),
    Metric("dense_flops", SCALAR, 0.0, None, "FLOPs per image, dense", label="FLOPs/image (dense)"),
    Metric("slim_flops", SCALAR, 0.0, None, "FLOPs per image, slimmed", label="FLOPs/image (slimmed)"),
    Metric("slim_max_abs_diff", SCALAR, 0.0, None, "max |logit difference| slimmed vs zeroed"),
    Metric("slim_matches_zeroed", SCALAR, 0.0, 1.0, "the slimmed network computes the zeroed one's logits",
           label="slimmed net == zeroed net"),
    Metric("slim_folded_params", SCALAR, 0.0, None, "parameters after folding BatchNorm"),
    Metric("slim_folded_max_abs_diff", SCALAR, 0.0, None, "max |logit difference| after folding"),
    Metric("gamma", PER_FEATURE, None, None, "per layer, per feature: BatchNorm gamma"),
    Metric("beta", PER_FEATURE, None, None, "per layer, per feature: BatchNorm beta"),
    Metric("steps", SCALAR, 0.0, None, "training steps taken", label="training steps"),
    Metric("diverged_at", SCALAR, 0.0, None, "step at which the loss became non-finite (None if never)",
           label="diverged at step"),
)

# Views of the one catalogue: what `claimbench run` prints, what a table cell may name.
PRINTED_METRICS: tuple[tuple[str, str], ...] = tuple((m.name, m.label) for m in RUN_METRICS.values() if m.label)
TABLE_SCALAR_METRICS = tuple(m.name for m in RUN_METRICS.values() if m.table and m.shape == SCALAR)
TABLE_LAYER_METRICS = tuple(m.name for m in RUN_METRICS.values() if m.table and m.shape == PER_LAYER)

SIMULATION_METRICS: dict[str, Metric] = _catalogue(
    Metric("final_abs", SCALAR, 0.0, None, "|theta| after the last iteration"),
    Metric("log10_final_abs", SCALAR, None, None, "log10 |theta| after the last iteration"),
    Metric("steps_to_1e-2", SCALAR, 0.0, None, "first recorded iteration with |theta| <= 1e-2 (the run's length if never)"),
    Metric("steps_to_1e-3", SCALAR, 0.0, None, "first recorded iteration with |theta| <= 1e-3 (the run's length if never)"),
    Metric("diverged_at", SCALAR, 0.0, None, "always None: a simulation cannot diverge"),
)


def metric_catalogue(simulation: bool, configs: Iterable[RunConfig] = ()) -> dict[str, Metric]:
    """What a simulation records, or what runs of ``configs`` may record: claimbench's metrics and the
    metrics their trainers declare (``unrecorded`` says which run does not report one)."""
    if simulation:
        return SIMULATION_METRICS
    extra: dict[str, Metric] = {}
    for cfg in configs:
        extra.update(trainer_metrics(cfg))
    return {**extra, **RUN_METRICS} if extra else RUN_METRICS


def trainer_metrics(cfg: RunConfig) -> dict[str, Metric]:
    """The metrics the run's registered trainer declares (none for claimbench's loop): scalars whose
    range claimbench does not know."""
    name = cfg.train.trainer
    if name is None:
        return {}
    declared = plugin_registry().trainer_plugin(name).plugin.metrics
    return {m: Metric(m, SCALAR, None, None, f"reported by the trainer {name}", trainer=name) for m in declared}


def metric_clash(trainer: str | None, names: Iterable[str]) -> str | None:
    """Why metrics a trainer names cannot be told from the ones claimbench records itself (None:
    they can). The one judgement, made when a claim is read (the metrics it declares) and when a
    run is recorded (the metrics it reported)."""
    clash = sorted(set(names) & set(RUN_METRICS))
    if not clash:
        return None
    return (f"the trainer {trainer} names the metrics {', '.join(clash)}, which claimbench measures itself; "
            f"the trainer must name its own metrics otherwise")


def trainer_metric_clash(cfg: RunConfig) -> str | None:
    """Why the run's trainer's declared metrics clash with claimbench's (None: they do not)."""
    return metric_clash(cfg.train.trainer, trainer_metrics(cfg))


# --- what one configuration records --------------------------------------------------------
# A metric or a conv layer that a run's configuration cannot produce would be found missing only
# after training; these let validation refuse it from the configuration alone (no torch).


def num_classes(cfg: RunConfig) -> int:
    """Classes of the run's data: the dataset's (claimbench.config.DATASET_SHAPES), or for the
    synthetic shapes ``data.num_classes`` where given."""
    classes = dataset_shape(cfg.data.dataset)[3]
    return (cfg.data.num_classes or classes) if cfg.data.dataset.startswith("shapes") else classes


def conv_layers(cfg: RunConfig) -> int:
    """Conv layers of the run's network, from its layout (claimbench.netshape)."""
    _, side, channels, _ = dataset_shape(cfg.data.dataset)
    spec = net_spec(cfg.model, channels, cfg.data.image_size or side, num_classes(cfg), cfg.data.dataset)
    return len(spec.convs)


def unrecorded(metric: Metric, cfg: RunConfig) -> str | None:
    """Why a run of ``cfg`` records no ``metric`` (None: it records it)."""
    if metric.trainer is not None and metric.name not in trainer_metrics(cfg):
        trained_by = "claimbench's loop" if cfg.train.trainer is None else f"the trainer {cfg.train.trainer}"
        return f"{metric.name} is reported by the trainer {metric.trainer}; this run is trained by {trained_by}"
    if metric.more_classes_than is not None and num_classes(cfg) <= metric.more_classes_than:
        return (f"{metric.name} is recorded only for more than {metric.more_classes_than} classes; "
                f"{cfg.data.dataset} has {num_classes(cfg)}")
    return None


def missing_layers(layers: Iterable[int], cfg: RunConfig) -> str | None:
    """Why conv ``layers`` (1-based) are not all in the run's network (None: they are)."""
    layers = tuple(layers)
    if not layers:
        return None
    if cfg.model.arch not in ARCHS:
        # A plug-in's BatchNorm layers are known only once it is built: refuse what cannot be judged.
        return f"the layers of the plug-in architecture {cfg.model.arch} are not known before training"
    n = conv_layers(cfg)
    beyond = sorted({layer for layer in layers if layer > n})
    if beyond:
        return f"{cfg.model.arch} has {n} conv layers (C1..C{n}); no {', '.join(f'C{b}' for b in beyond)}"
    return None
