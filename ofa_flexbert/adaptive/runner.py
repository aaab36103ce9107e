"""A flexible model with its gates and off-ramps, run as one inference mode says -- on any backbone.

Why here and not in the infer stage: ``--stage infer``, ``--stage search`` and the deployed
dynamic predictor all run a mode the same way -- the gates (:class:`GateRouter`) pick widths, the
exit check (:class:`ExitCheck`) retires inputs, both hooks of the routed encoder's one forward
(``encoder.classify``), in the reference's order (the exit check first) -- and count each input's
cost the same way.  The backbone may be the trained dygraph model or one whose encoder layers
run on Paddle Inference (``ofa_flexbert.deploy.dynamic_predictor``).  A cascade plan runs its
static subnets in turn (``adaptive.cascade``), each a call of the same forward.
"""
from __future__ import annotations

from typing import Optional

import paddle

from ofa_flexbert.engine.accounting import route_macs
from ofa_flexbert.engine.encoder import Hook, classify, pooling_of
from ofa_flexbert.errors import UserError
from ofa_flexbert.engine.routes import Route
from ofa_flexbert.store.outputs import recorded_depth_rule

from gate.modules import GateRouter
from gate.ramps import ExitCheck, chain

from .cascade import CascadeRun, run_cascade
from .cost import dynamic_macs
from .setting import Mode, Plan


class DynamicModel:
    """A backbone with its gates and off-ramps, run as a :class:`Plan` says."""

    def __init__(self, model, gates, ramps, plan: Plan, depth_rule: str = "prefix"):
        self.model, self.gates, self.ramps, self.plan = model, gates, ramps, plan
        self.config = model.bert.config
        self.pooling = pooling_of(model.bert)
        start_width = plan.fixed_gate or (1.0 if plan.gated else plan.widths[0])
        self.route = Route.uniform(self.config, start_width, plan.depth_mult, depth_rule)
        self.stages = [Route.uniform(self.config, w, d, depth_rule) for w, d in plan.stages] \
            if plan.mode is Mode.CASCADE else []
        if plan.gated and len(plan.widths) != gates.settings.num_classes:
            raise UserError(f"--width_mult_list: the gates have {gates.settings.num_classes} classes, so it needs "
                            f"{gates.settings.num_classes} widths, got {len(plan.widths)}")

    def run(self, batch: dict, first: Optional[Hook] = None):
        """(logits [B, C], the routes taken) for one batch, eval mode, no gradient.

        ``first``: a hook run before the plan's own at every step (``--stage search`` records
        the off-ramps' predictions with it)."""
        if self.stages:
            return run_cascade(self.model, batch, self.stages, self.plan.thresholds, self.plan.normalized_entropy,
                               self.model.bert.pad_token_id)
        rows = int(batch["input_ids"].shape[0])
        router = (GateRouter(self.gates, self.config, rows, self.plan.widths, threshold=self.plan.gate_threshold)
                  if self.plan.gated else None)
        check = None
        if self.plan.exits:
            check = ExitCheck(self.ramps, self.plan.exit_threshold, self.plan.normalized_entropy, len(self.route.layers))
        hooks = [h for h in (first, check, router) if h is not None]
        with paddle.no_grad():
            out = classify(self.model, batch["input_ids"], batch["token_type_ids"], self.route,
                           hook=chain(*hooks) if hooks else None,
                           exit_heads=self.ramps.heads() if self.plan.exits else None)
        return out.logits.numpy(), out.routes

    def macs(self, route: Route | CascadeRun, length: int) -> int:
        """Everything one input of ``length`` tokens ran on ``route``: layers, head, gates, exit checks;
        in a cascade, every subnet it ran (the entropy of C logits is not counted)."""
        if isinstance(route, CascadeRun):
            return sum(route_macs(self.config, r, length) for r in route.routes)
        return dynamic_macs(self.config, route, length, self.pooling,
                            self.gates.settings if self.plan.gated else None,
                            self.ramps.layers if self.plan.exits else None)


def depth_rule_for(model_dir: str, plan: Plan) -> str:
    """The model's recorded --depth_rule (prefix if it had no depth training), checked against early exit.

    An off-ramp after layer j answers for the first j+1 layers, which the depth stage trained only
    under the prefix rule; a model trained with another rule never learned to stop there.
    """
    rule = recorded_depth_rule(model_dir) or "prefix"
    if plan.exits and rule != "prefix":
        raise UserError(f"--early_exit: the model in {model_dir} was depth-trained with --depth_rule {rule}, "
                        "whose shallow subnets are not the first layers; early exit needs a --depth_rule prefix model")
    return rule
