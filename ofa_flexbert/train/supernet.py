"""The supernet: OFA conversion, subnet configs, importance and rewiring.

A BERT becomes a supernet with PaddleSlim's ``Convert(supernet(expand_ratio=...))``; OFA then
routes every converted Linear through the current subnet config.  We give OFA absolute
``channel`` configs built from :func:`routes.width_for` -- the one place that turns a width
multiplier into heads and FFN neurons -- because OFA's own ``int(ratio * size)`` truncation
cannot express the reference's ``round(A*w)`` heads (w = 0.55 or 0.65 with 12 heads).

Depth is OFA's ``depth`` config entry (``RunConfig(elastic_depth=...)``); :func:`routes.depth_layers`
turns it into the encoder layers to run, which the patched classifier forward accepts.

Rewiring sorts heads and FFN neurons by importance so each narrower subnet is a prefix of the
wider ones; the permutation itself is PaddleNLP's ``reorder_neuron_head``.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import paddle
from paddleslim.nas.ofa import OFA, DistillConfig, RunConfig
from paddleslim.nas.ofa import utils as ofa_utils
from paddleslim.nas.ofa.convert_super import Convert, supernet

from ofa_flexbert.train import distributed
from ofa_flexbert.train.loop import Strategy, backward_each
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.engine.losses import task_loss
from ofa_flexbert.store.models import freeze, save_model
from ofa_flexbert.engine.routes import DEPTH_RULES, config_width, depth_layers, unknown_rule

ATTENTION_INPUTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
FFN_INPUT = "linear1"


def linear(layer) -> paddle.nn.Layer:
    """The Linear inside an OFA ``Block`` (``.fn``), or the layer itself."""
    return getattr(layer, "fn", layer)


def convert_to_supernet(model, width_mult_list: Iterable[float]):
    """Convert ``model`` in place into an OFA supernet holding its own weights.

    ``expand_ratio`` must be a list whose maximum is 1.0: a scalar converts nothing and a
    maximum above 1 grows the layers (docs/reference.md, Supernet conversion).
    """
    weights = dict(model.state_dict())
    ratios = sorted({float(w) for w in width_mult_list} | {1.0})
    Convert(supernet(expand_ratio=ratios)).convert(model)
    ofa_utils.set_state_dict(model, weights)
    return model


def plain_state_dict(model) -> dict[str, paddle.Tensor]:
    """The supernet's weights under the original model's names (drops OFA's ``.fn``)."""
    return {name.replace(".fn.", "."): value for name, value in model.state_dict().items()}


class FlexOFA(OFA):
    """PaddleSlim's OFA, driven by explicit subnet configs, with a teacher run once per batch.

    ``OFA.forward`` runs the teacher before every student forward -- 4 times per batch in the
    width stage, 12 in the depth stage -- and builds its gradient graph.  Here the teacher runs
    once per batch (:meth:`teacher_forward`, under ``no_grad``); each :meth:`forward` runs the
    student only, and OFA's own hooks and ``calc_distill_loss`` pair the mapping layers of the
    latest student forward with that teacher forward.  The teacher stays in eval mode even
    after ``.train()`` (stock OFA switches it to train mode, dropout on).

    Under data parallel, student forwards run through ``paddle.DataParallel`` (built here,
    with ``find_unused_parameters`` when depth is elastic: shallow subnets skip layers) while
    ``self.model`` stays the plain model, so OFA's layer names and hooks are unchanged.
    """

    def __init__(self, model, teacher=None, mapping_layers: Optional[list[str]] = None,
                 depth_mult_list: Optional[Iterable[float]] = None, depth_rule: str = "prefix"):
        distill = None
        if teacher is not None:
            distill = DistillConfig(teacher_model=freeze(teacher), mapping_layers=list(mapping_layers or []))
        run_config, order = None, ["width"]
        if depth_mult_list:  # OFA's elastic depth: a 'depth' entry in the search space and the configs
            run_config, order = RunConfig(elastic_depth=sorted({float(d) for d in depth_mult_list})), ["width", "depth"]
        if depth_rule not in DEPTH_RULES:
            raise ValueError(unknown_rule(depth_rule))
        super().__init__(model, run_config=run_config, distill_config=distill, elastic_order=order)
        self.depth_rule = depth_rule
        # not a sublayer (it would list the student's parameters twice): a plain attribute
        object.__setattr__(self, "_runner", distributed.data_parallel(model, find_unused_parameters=bool(depth_mult_list)))
        self._teacher_acts: dict[str, Any] = {}

    @property
    def teacher(self):
        return self.ofa_teacher_model.model if self._add_teacher else None

    def use(self, config: dict) -> None:
        """Make ``config`` the subnet of every following forward, also of direct ``self.model`` calls."""
        self.set_net_config(config)
        self.current_config = config

    def teacher_forward(self, *inputs, **kwargs):
        """Full teacher forward, recording the mapping layers' outputs for the next distill losses."""
        self._reset_hook_before_forward()
        try:
            with paddle.no_grad():
                output = self.teacher(*inputs, **kwargs)
        finally:
            self._remove_hook_after_forward()
        self._teacher_acts = self.Tacts
        return output

    def forward(self, *inputs, **kwargs):
        """Student forward at the config set by :meth:`use` (capturing mapping layers if distilling)."""
        if self.net_config is None:
            raise RuntimeError("FlexOFA: call use(config) before a forward")
        self.current_config = self.net_config
        if "depth" in self.current_config:  # stock OFA passes depth=d; the patched classifier takes layers
            kwargs["layer_indices"] = self.layers_for(self.current_config["depth"])
        if not self._add_teacher:
            return self._runner(*inputs, **kwargs)
        self._reset_hook_before_forward()
        try:
            output = self._runner(*inputs, **kwargs)
        finally:
            self._remove_hook_after_forward()
        self.Tacts = self._teacher_acts
        return output

    def train(self):
        super().train()
        if self._add_teacher:
            self.teacher.eval()
        return self

    def layers_for(self, depth_mult: float) -> list[int]:
        """The encoder layers the student runs at ``depth_mult`` (this supernet's depth rule)."""
        return depth_layers(self.model.bert.config.num_hidden_layers, depth_mult, self.depth_rule)

    def subnet_config(self, width_mult: float, depth_mult: Optional[float] = None) -> dict[str, Any]:
        """A fresh config dict for every OFA layer at ``width_mult`` (no aliasing between calls).

        q/k/v and FFN-in narrow to :func:`routes.width_for`; what follows them (attention-out, FFN-out)
        narrows its input automatically; every other layer stays full.  ``depth_mult`` adds
        OFA's ``depth`` entry (the forward then runs :meth:`layers_for` it).
        """
        width = config_width(self.model.bert.config, width_mult)
        config: dict[str, Any] = {}
        for name in self._ofa_layers:
            if name == "depth":  # OFA's search-space entry, not a layer
                continue
            if name.endswith(ATTENTION_INPUTS):
                config[name] = {"channel": width.attention_dim}
            elif name.endswith("." + FFN_INPUT):
                config[name] = {"channel": width.ffn}
            else:
                config[name] = {"expand_ratio": 1.0}
        if depth_mult is not None:
            config["depth"] = float(depth_mult)
        return config


def mapping_layers(model) -> list[str]:
    """The distilled layers: embeddings and every encoder layer (the tutorial's mapping)."""
    return ["bert.embeddings"] + [f"bert.encoder.layers.{i}" for i in range(model.bert.config.num_hidden_layers)]


def compute_importance(ofa: FlexOFA, batches: Iterable[dict], task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Head and FFN-neuron importance of the full-width student on ``batches`` (labelled batches).

    Head importance is |∂L/∂m| for a head mask m of ones (Michel et al. 2019); neuron n's is
    |Σ W1[:, n]·∂W1[:, n] + b1[n]·∂b1[n]| + |Σ W2[n, :]·∂W2[n, :]| (Paddle's Linear is [in, out]).
    Both are summed over batches of per-batch gradients: unlike the reference, gradients are
    cleared after every batch and at the end, so nothing leaks into the next training step
    (docs/reference.md, Grafting side effects).  Computed in eval mode (no dropout), so the result is deterministic.
    Returns ``(heads [L, A], neurons [L, F])``.
    """
    model = ofa.model
    config = model.bert.config
    layers = model.bert.encoder.layers
    previous, was_training = ofa.net_config, model.training
    ofa.use(ofa.subnet_config(1.0))
    model.eval()
    heads = np.zeros([config.num_hidden_layers, config.num_attention_heads])
    neurons = np.zeros([config.num_hidden_layers, config.intermediate_size])
    head_mask = paddle.ones([config.num_hidden_layers, config.num_attention_heads])
    head_mask.stop_gradient = False
    model.clear_gradients()
    try:
        for batch in batches:
            logits = model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=[None, head_mask])
            task_loss(task, logits, batch["labels"]).backward()
            heads += np.abs(head_mask.grad.numpy())
            for index, layer in enumerate(layers):
                w1, w2 = linear(layer.linear1), linear(layer.linear2)
                into = (w1.weight * w1.weight.grad).sum(axis=0) + w1.bias * w1.bias.grad
                out = (w2.weight * w2.weight.grad).sum(axis=1)
                neurons[index] += np.abs(into.numpy()) + np.abs(out.numpy())
            model.clear_gradients()
            head_mask.clear_gradient()
    finally:
        model.clear_gradients()
        if previous is not None:
            ofa.use(previous)
        model.train() if was_training else model.eval()
    return heads, neurons


def rewire(model, heads: np.ndarray, neurons: np.ndarray) -> None:
    """Sort every layer's heads and FFN neurons by descending importance (function unchanged)."""
    from paddlenlp.transformers.ofa_utils import reorder_neuron_head

    reorder_neuron_head(model, paddle.to_tensor(heads.astype("float32")), [n.astype("float32") for n in neurons])


class SupernetStrategy(Strategy):
    """What the width and the depth/final strategies share: an OFA student trained on many subnets.

    Subclasses set ``model`` (the supernet), ``tokenizer``, ``args`` and ``subnets``.
    """

    def backward_all(self, loss_of) -> dict[str, float]:
        """``loop.backward_each`` over every subnet, balanced if --balance_subnet_gradients."""
        return backward_each(self.subnets, loss_of, self.model if self.args.balance_subnet_gradients else None)

    def save(self, output_dir: str) -> None:
        """A plain BERT directory: the supernet's weights under the dense model's names."""
        save_model(self.model, self.tokenizer, output_dir, state_dict=plain_state_dict(self.model))
