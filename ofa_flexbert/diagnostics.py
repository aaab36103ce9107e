"""Checks on a stage's input model that predict a failure before hours of training.

The one check today: does each depth's subnet hand its classifier a [CLS] vector that differs
between inputs?  The classifier reads [CLS] only (pooler, then linear).  Some backbones put
almost nothing into [CLS] before their last layers: in all-MiniLM-L6-v2, a mean-pooled
sentence-transformer, the [CLS] that its 3-layer prefix subnet hands the classifier varies 0.13%
as much across inputs as the full model's (README, "Depth stage").  A prefix subnet that stops there sees one vector for every input; its
distillation gradient is a small fraction of the deeper subnets', the summed step ignores it,
and it ends predicting one class.  The depth stage measures this on a few dev inputs (no labels
are read, nothing in training changes) and warns, naming the two remedies.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import paddle

from .supernet import depth_layers

# Below this share of the full-depth [CLS] spread, a subnet's classifier input barely depends on
# the input.  MiniLM's prefix subnets measure 0.0013 (3 of 6 layers) and 0.011 (4 layers), its
# every-other ones 0.51 and 0.079 (bench/depth_diagnosis.py); a randomly initialised tiny BERT about
# 0.5 at a quarter of its layers (tests/test_diagnostics.py).
SPREAD_WARNING_SHARE = 0.05


def cls_spread(model: paddle.nn.Layer, batches: Iterable[dict], layer_indices: Optional[list[int]] = None) -> list[float]:
    """How much [CLS] varies across inputs: after the embeddings, then after each layer run.

    For each hidden state, the standard deviation over all inputs of ``batches``, averaged over
    features.  ``layer_indices`` chooses the layers as the patched BertModel forward does (all of
    them by default).  Runs in eval mode under no_grad and restores the model's mode.
    """
    was_training = model.training
    model.eval()
    collected: list[list[np.ndarray]] = []
    with paddle.no_grad():
        for batch in batches:
            _, hidden = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                              output_hidden_states=True, layer_indices=layer_indices)
            if not collected:
                collected = [[] for _ in hidden]
            for store, state in zip(collected, hidden):
                store.append(state[:, 0].numpy().astype(np.float64))
    if was_training:
        model.train()
    return [float(np.concatenate(store).std(axis=0).mean()) for store in collected]


def shallow_depth_check(model: paddle.nn.Layer, batches: list[dict], depth_mult_list: Iterable[float],
                        rule: str, balanced: bool = False) -> tuple[dict[float, float], Optional[str]]:
    """Each depth's [CLS] spread as a share of full depth's, and a one-line warning if one is degenerate.

    The share compares what the classifier of the depth-d subnet sees (at full width) with what
    the full-depth model's classifier sees, on the same inputs.  ``balanced``: the run already
    uses --balance_subnet_gradients, so the warning asks the user to watch that subnet instead.
    """
    layers = model.bert.config.num_hidden_layers
    full = cls_spread(model, batches)[-1]
    shares = {}
    for depth in sorted(set(depth_mult_list)):
        run = depth_layers(layers, depth, rule)
        spread = full if len(run) == layers else cls_spread(model, batches, run)[-1]
        shares[depth] = spread / full if full > 0 else 1.0
    degenerate = [d for d, share in shares.items() if share < SPREAD_WARNING_SHARE]
    if not degenerate:
        return shares, None
    worst = min(degenerate)
    advice = ("--balance_subnet_gradients is on; watch this subnet's dev metric" if balanced else
              "consider --balance_subnet_gradients (keeps the prefix rule) or --depth_rule every_other")
    message = (f"depth {worst:g} ({rule} rule, layers {depth_layers(layers, worst, rule)}): its [CLS] varies "
               f"{shares[worst]:.1%} as much across inputs as at full depth (warning below "
               f"{SPREAD_WARNING_SHARE:.0%}), so its subnets may predict one class; this backbone puts little into "
               f"[CLS] before its last layers: {advice} (README, Depth stage)")
    return shares, message
