"""Route training of the gates (``--gate_training routes``): the gated model itself runs each step,
every gate's choice straight-through, distilled from the full model with a MACs hinge (see ``gate.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import paddle

from gate.io import load_gates, load_off_ramps
from gate.loss import macs_share, route_loss, temperature
from gate.modules import Gates
from gate.ramps import OffRamps, ramp_inputs, ramp_loss
from gate.relaxed import RelaxedOutput, relaxed_classify
from gate.settings import RouteCosts, route_costs

from ofa_flexbert.train import distributed
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import TaskSpec
from ofa_flexbert.errors import UserError

from .gate_data import GateData
from .gate_targets import GateModules, GateStrategy

logger = logging.getLogger("ofa_flexbert")


class RoutedGateModules(GateModules):
    """The same trainable parameters as :class:`GateModules` (so the same checkpoint and gates
    files), run as route training needs: the gated model on a token batch, every gate's choice
    straight-through (``gate.relaxed``).  The frozen backbone is held outside the layer tree so
    that it is neither checkpointed nor synchronised as a trainable part."""

    def __init__(self, backbone, gates: Gates, ramps: OffRamps, train_ramps: bool):
        super().__init__(gates, ramps, train_ramps)
        self._backbone = [backbone]

    def forward(self, batch: dict, tau: float, ramp_inputs: Optional[list[paddle.Tensor]] = None
                ) -> tuple[paddle.Tensor, list[paddle.Tensor], Optional[list[paddle.Tensor]]]:
        """(the gated model's logits, each gate's straight-through choice, the off-ramps' logits or None).

        Plain tensors in tuples and lists: paddle's DataParallel finds the outputs it must wait
        for by walking those (a dataclass hides them, and the reducer then fails in backward).
        """
        out: RelaxedOutput = relaxed_classify(self._backbone[0], batch["input_ids"], batch["token_type_ids"],
                                              self.gates, self.gates.settings.class_widths, tau=tau, noise=True)
        return out.logits, out.choices, (None if ramp_inputs is None else self.ramps(ramp_inputs))


class RouteGateStrategy(GateStrategy):
    """``--gate_training routes``: the gates learn from the routes they take (``gate.py``'s docstring).

    Each step costs a no-gradient full-model forward (the distillation teacher, and the
    off-ramps' inputs) and the relaxed gated model, which runs every class width of every layer
    forward and backward: for widths 0.25-1 about five full forwards.
    """

    def __init__(self, backbone, gates: Gates, tokenizer, task: TaskSpec, args: RunArgs, steps: int,
                 dev: GateData, dev_loader, ramps: OffRamps):
        weights = np.ones(gates.settings.num_classes)  # the dev gate loss is reported unweighted
        super().__init__(backbone, gates, tokenizer, task, args, weights, steps, dev, dev_loader, ramps)
        self.target, self.cost_weight = args.gate_macs_target, args.gate_cost_weight
        self.costs: dict[int, RouteCosts] = {}
        self.dev_teacher = full_logits(backbone, dev_loader, ramps)

    def modules(self) -> GateModules:
        return RoutedGateModules(self.backbone, self.gates, self.ramps, self.train_ramps)

    def row_costs(self, input_ids: paddle.Tensor) -> list[RouteCosts]:
        """Each row's :class:`gate.settings.RouteCosts` at its real length (padding excluded)."""
        lengths = (input_ids != self.backbone.bert.pad_token_id).astype("int64").sum(axis=1).numpy()
        for length in set(lengths.tolist()) - set(self.costs):
            self.costs[length] = route_costs(self.backbone.bert.config, self.gates.settings, length)
        return [self.costs[int(t)] for t in lengths]

    def train_step(self, batch: dict) -> dict[str, float]:
        tau = temperature(self.step, self.steps)
        pooled, teacher = ramp_inputs(self.backbone, batch, self.ramps)  # the teacher: the full model's logits
        logits, choices, ramp_logits = self.runner(batch, tau, pooled if self.train_ramps else None)
        share = macs_share(choices, self.row_costs(batch["input_ids"]))
        loss, distill, penalty = route_loss(self.task, logits, teacher, share, self.target, self.cost_weight)
        logs = {"route_distill": float(distill), "macs_share": float(share), "macs_penalty": float(penalty), "tau": tau}
        if self.train_ramps:
            ramp = ramp_loss(ramp_logits, teacher)
            logs["ramp_loss"] = float(ramp)
            loss = loss + ramp
        loss.backward()
        self.step += 1
        return {"loss": float(loss), **logs}

    def selection_loss(self, target_loss: float, gated_logits: np.ndarray, gated: dict, scalars: dict,
                       extra: dict) -> tuple[float, str]:
        """The route loss on dev with the gates' argmax routes (no noise: deterministic), at the
        MACs the engine counts -- the same share as in training, a test checks."""
        with paddle.no_grad():
            total, distill, _ = route_loss(self.task, paddle.to_tensor(gated_logits), paddle.to_tensor(self.dev_teacher),
                                             paddle.to_tensor(gated["macs_share"], dtype="float32"), self.target,
                                             self.cost_weight)
        loss = float(total)
        extra["route_loss"] = {"loss": loss, "distillation": float(distill), "macs_share": gated["macs_share"],
                               "macs_target": self.target, "cost_weight": self.cost_weight}
        scalars.update({"eval/route_loss": loss, "eval/route_distill": float(distill)})
        return loss, (f"; route loss {loss:.4f} (distillation {float(distill):.4f}, "
                      f"MACs {gated['macs_share']:.0%} against a target of {self.target:.0%})")

    def training_record(self) -> dict[str, Any]:
        return {"gate_training": "routes", "gate_macs_target": self.target, "gate_cost_weight": self.cost_weight}


def full_logits(model, loader, ramps: OffRamps) -> np.ndarray:
    """The full model's logits on every example of ``loader``, in order (batches shared among ranks):
    the distillation teacher of route training on dev."""
    parts = [(index, ramp_inputs(model, batch, ramps)[1].numpy()) for index, batch in distributed.shard_batches(loader)]
    return np.concatenate(distributed.gather(parts))


def start_from_saved(args: RunArgs, gates: Gates, ramps: OffRamps) -> Optional[str]:
    """Route training continues from the gates (and off-ramps) saved in --model_dir, if it has any:
    target-trained gates already depend on the input, and training them on their own routes is
    what corrects the features they were trained on.  Returns the directory they came from.

    Saved gates with other settings than the flags' are refused (a silent restart would throw away
    what the user meant to refine); off-ramps are reused when they sit at the same layers.
    """
    saved = load_gates(args.model_dir)
    if saved is None:
        return None
    if saved.settings != gates.settings:
        raise UserError(f"--model_dir {args.model_dir}: its gates ({saved.settings.num_gates} gates, widths "
                        f"{','.join(f'{w:g}' for w in saved.settings.gate_setting)} -> "
                        f"{','.join(f'{w:g}' for w in saved.settings.class_widths)}) differ from the flags' "
                        f"({gates.settings.num_gates} gates, {','.join(f'{w:g}' for w in gates.settings.gate_setting)} -> "
                        f"{','.join(f'{w:g}' for w in gates.settings.class_widths)}); --gate_training routes starts "
                        "from a model's gates, so give matching --num_gates/--gate_setting/--width_mult_list")
    gates.set_state_dict(saved.state_dict())
    saved_ramps = load_off_ramps(args.model_dir)
    if saved_ramps is not None and saved_ramps.layers == ramps.layers:
        ramps.set_state_dict(saved_ramps.state_dict())
    return args.model_dir
