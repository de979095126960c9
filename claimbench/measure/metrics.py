"""Every metric of one trained network, as a JSON-serialisable dict.

In:  a trained ``ConvNet`` and its ``ImageData`` (the model is put in eval mode and otherwise left
     untouched: pruning works on copies).
Out: ``measure_model(...) -> dict`` of plain floats/ints/bools/lists; percentages are 0..100.
  Errors:       train_loss, test_loss, test_error [, test_error_top5 when > 100 classes]
  By |gamma|:   sparsity_gamma (|gamma| < 1e-3), sparsity_gamma_1e-2, layer_sparsity_gamma,
                layer_sparsity_gamma_1e-2, layer_sizes
  By activation (max |act| over the training set): sparsity_act (<= 1e-12), sparsity_act_1e-4,
                layer_sparsity_act, layer_sparsity_act_1e-4
  Selectivity:  universality (per layer, per feature, %)
  Table 2:      pruned_features, pruned_test_error [, pruned_test_error_top5],
                conv_params_total, conv_params_pruned_pct
  Slimmed net:  slim_params, dense_params, slim_flops, dense_flops, slim_max_abs_diff,
                slim_matches_zeroed, slim_folded_params, slim_folded_max_abs_diff
  BN values:    gamma, beta (per layer lists)
"""

from __future__ import annotations

from typing import Any

import torch

from claimbench.data.base import ImageData
from claimbench.measure.loss_error import evaluate
from claimbench.measure.pruning import fold_batchnorm, pruned_conv_params, slim_model, zero_pruned
from claimbench.measure.sparsity import (
    ACT_THRESHOLD,
    ACT_THRESHOLD_HIGH,
    GAMMA_THRESHOLD,
    GAMMA_THRESHOLD_HIGH,
    activation_sparsity,
    concat_pooled,
    gamma_sparsity,
    recording_pooled,
    universality,
)
from claimbench.netcost import flops_per_image
from claimbench.train.models import ConvNet, count_params

TOP5_MIN_CLASSES = 100  # top-5 error is reported only for more classes than this


def _sig(values: torch.Tensor, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values.detach().cpu().double().tolist()]


def slim_tolerance(max_abs_logit: float) -> float:
    return 1e-4 * (1.0 + max_abs_logit)


def measure_model(model: ConvNet, data: ImageData, batch_size: int = 500) -> dict[str, Any]:
    model.eval()
    out: dict[str, Any] = {}
    top5 = data.num_classes > TOP5_MIN_CLASSES

    # One pass over the training set gives the loss and every feature's pooled activations.
    with recording_pooled(model) as store:
        train = evaluate(model, data, "train", batch_size)
    pooled = concat_pooled(store)
    test = evaluate(model, data, "test", batch_size)
    out["train_loss"] = train.loss
    out["test_loss"] = test.loss
    out["test_error"] = test.error
    if top5:
        out["test_error_top5"] = test.error_top5

    g, g_high = gamma_sparsity(model, GAMMA_THRESHOLD), gamma_sparsity(model, GAMMA_THRESHOLD_HIGH)
    out["sparsity_gamma"] = g.total
    out["sparsity_gamma_1e-2"] = g_high.total
    out["layer_sparsity_gamma"] = g.layers
    out["layer_sparsity_gamma_1e-2"] = g_high.layers
    out["layer_sizes"] = g.sizes

    a, a_high = activation_sparsity(pooled, ACT_THRESHOLD), activation_sparsity(pooled, ACT_THRESHOLD_HIGH)
    out["sparsity_act"] = a.total
    out["sparsity_act_1e-4"] = a_high.total
    out["layer_sparsity_act"] = a.layers
    out["layer_sparsity_act_1e-4"] = a_high.layers
    out["universality"] = [[round(float(v), 2) for v in layer.tolist()] for layer in universality(pooled)]
    del pooled, store

    if model.spec is None:
        # A plug-in network (claimbench.train.models.PluginNet): its layout is not claimbench's, so it is
        # not slimmed and its conv weights are not counted; its zeroed features are measured.
        pruned = evaluate(zero_pruned(model, GAMMA_THRESHOLD), data, "test", batch_size)
        out["pruned_features"] = sum(g.inactive)
        out["pruned_test_error"] = pruned.error
        if top5:
            out["pruned_test_error_top5"] = pruned.error_top5
        out["dense_params"] = count_params(model)
        out["gamma"] = [_sig(block.bn.weight) for block in model.blocks]
        out["beta"] = [_sig(block.bn.bias) for block in model.blocks]
        return out

    zeroed = zero_pruned(model, GAMMA_THRESHOLD)
    slim = slim_model(model, GAMMA_THRESHOLD)
    folded = fold_batchnorm(slim)
    pruned = evaluate(zeroed, data, "test", batch_size, compare=(slim, folded))
    out["pruned_features"] = sum(g.inactive)
    out["pruned_test_error"] = pruned.error
    if top5:
        out["pruned_test_error_top5"] = pruned.error_top5
    dense_conv, kept_conv = pruned_conv_params(model, GAMMA_THRESHOLD)
    out["conv_params_total"] = dense_conv
    out["conv_params_pruned_pct"] = 100.0 * (dense_conv - kept_conv) / dense_conv

    size = data.image_size
    out["dense_params"] = count_params(model)
    out["slim_params"] = count_params(slim)
    out["dense_flops"] = flops_per_image(model.spec, size)
    out["slim_flops"] = flops_per_image(slim.spec, size)
    out["slim_max_abs_diff"] = pruned.max_abs_diff[0]
    out["slim_matches_zeroed"] = bool(pruned.max_abs_diff[0] <= slim_tolerance(pruned.max_abs_logit))
    out["slim_folded_params"] = count_params(folded)
    out["slim_folded_max_abs_diff"] = pruned.max_abs_diff[1]

    out["gamma"] = [_sig(block.bn.weight) for block in model.blocks]
    out["beta"] = [_sig(block.bn.bias) for block in model.blocks]
    return out
