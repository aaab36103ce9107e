"""Checks on a stage's input model that predict a failure before hours of training.

The one check today: does each depth's subnet hand its classifier a pooled vector ([CLS], or the
token mean of a ``--pooling mean`` model) that differs between inputs?  Some backbones put almost
nothing into [CLS] before their last layers: in all-MiniLM-L6-v2, a mean-pooled
sentence-transformer, the [CLS] that its 3-layer prefix subnet hands the classifier varies 0.13%
as much across inputs as the full model's (docs/benchmarks.md).  A prefix subnet that stops
there sees one vector for every input; its distillation gradient is a small fraction of the
deeper subnets', the summed step ignores it, and it ends predicting one class.  The depth stage
measures this on the first 256 dev inputs (no labels are read, nothing in training changes) and
warns, naming the remedies -- first among them fine-tuning with ``--pooling mean``, after which
every MiniLM prefix subnet trained (docs/benchmarks.md, "Depth stage with --pooling mean").
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import paddle

from ofa_flexbert.engine.encoder import additive_mask, pool_input, pooling_of, token_weights
from ofa_flexbert.engine.routes import depth_layers

# Below this share of the full-depth [CLS] spread, a subnet's classifier input barely depends on
# the input.  MiniLM's prefix subnets measure 0.0013 (3 of 6 layers) and 0.011 (4 layers), its
# every-other ones 0.51 and 0.079 (bench/depth_diagnosis.py); a randomly initialised tiny BERT about
# 0.5 at a quarter of its layers (tests/train/test_diagnostics.py).
SPREAD_WARNING_SHARE = 0.05
# Dev inputs the check looks at (whole batches): enough for a stable standard deviation, and a
# few seconds of forwards.
CHECK_EXAMPLES = 256


def pooled_spread(model: paddle.nn.Layer, batches: Iterable[dict],
               layer_indices: Optional[list[int]] = None) -> list[float]:
    """How much the pooled vector varies across inputs: after the embeddings, then after each layer run.

    The vector the model's pooler would read there: [CLS], or the masked token mean for a model
    with ``pooling: mean``.  For each hidden state, the standard deviation over all inputs of
    ``batches``, averaged over features.  ``layer_indices`` chooses the layers as the patched BertModel forward does (all of
    them by default).  Runs in eval mode under no_grad and restores the model's mode.
    """
    was_training = model.training
    model.eval()
    collected: list[list[np.ndarray]] = []
    with paddle.no_grad():
        for batch in batches:
            _, hidden = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                              output_hidden_states=True, layer_indices=layer_indices, return_dict=False)
            if not collected:
                collected = [[] for _ in hidden]
            weights = token_weights(additive_mask(model.bert, batch["input_ids"], None))
            for store, state in zip(collected, hidden):
                store.append(pool_input(model.bert, state, weights).numpy().astype(np.float64))
    if was_training:
        model.train()
    return [float(np.concatenate(store).std(axis=0).mean()) for store in collected]


def first_batches(loader: Iterable[dict], examples: int = CHECK_EXAMPLES) -> list[dict]:
    """Whole batches from the start of ``loader`` until they hold at least ``examples`` inputs."""
    batches, seen = [], 0
    for batch in loader:
        batches.append(batch)
        seen += int(batch["input_ids"].shape[0])
        if seen >= examples:
            break
    return batches


def shallow_depth_check(model: paddle.nn.Layer, batches: list[dict], depth_mult_list: Iterable[float],
                        rule: str, balanced: bool = False) -> tuple[dict[float, float], Optional[str]]:
    """Each depth's pooled-vector spread as a share of full depth's, and a one-line warning naming every degenerate depth.

    The share compares what the classifier of the depth-d subnet sees (at full width) with what
    the full-depth model's classifier sees, on the same inputs.  ``balanced``: the run already
    uses --balance_subnet_gradients, so the warning asks the user to watch those subnets instead.
    Without any spread at full depth (fewer than two inputs, or a broken model) there is no
    share to compute: the shares are empty and the warning says the check was skipped.
    """
    layers = model.bert.config.num_hidden_layers
    full = pooled_spread(model, batches)[-1]
    vector = "[CLS]" if pooling_of(model.bert) == "cls" else "mean-pooled vector"
    if full == 0:
        return {}, (f"the depth check is skipped: the full model's {vector} is the same for all "
                    f"{sum(int(b['input_ids'].shape[0]) for b in batches)} dev inputs it was given")
    shares = {}
    for depth in sorted(set(depth_mult_list)):
        run = depth_layers(layers, depth, rule)
        shares[depth] = 1.0 if len(run) == layers else pooled_spread(model, batches, run)[-1] / full
    degenerate = sorted((d for d in shares if shares[d] < SPREAD_WARNING_SHARE), key=shares.get)
    if not degenerate:
        return shares, None
    named = ", ".join(f"{shares[d]:.1%} at depth {d:g} (layers {depth_layers(layers, d, rule)})" for d in degenerate)
    if balanced:
        advice = "--balance_subnet_gradients is on; watch these subnets' dev metrics"
    elif rule == "prefix":
        advice = "consider --balance_subnet_gradients (keeps the prefix rule) or --depth_rule every_other"
    else:
        advice = "consider --balance_subnet_gradients"
    if vector == "[CLS]" and not balanced:  # what fixed it on MiniLM: every prefix subnet works with mean pooling
        advice = ("fine-tune the teacher with --pooling mean (the fix measured on all-MiniLM-L6-v2, "
                  f"docs/benchmarks.md), or {advice.replace('consider ', 'use ')}")
    message = (f"{rule} depth rule: the {vector} a subnet hands its classifier varies across inputs only {named} "
               f"as much as at full depth (warning below {SPREAD_WARNING_SHARE:.0%}), so these subnets may predict "
               f"one class: this backbone puts little into it before its last layers; {advice} "
               "(docs/design.md, \"Depth\")")
    return shares, message
