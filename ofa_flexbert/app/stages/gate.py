"""Stage ``gate``: width gates (``gate/``) trained on a frozen backbone (docs/reference.md, Gate training and selection).

The input is a depth- or final-stage model; its weights are never changed (a test checks they
are bit-identical).  What differs from the reference, each a recorded decision (docs/decisions.md):

* targets in eval mode (the reference's train-mode dropout makes them random, docs/reference.md, Gate targets);
* because the backbone is frozen and targets are deterministic, every input's targets and the
  features each gate reads at its target's width are computed **once** (one no-gradient
  forward per --gate_setting width over the training set), and the gates then train on those
  cached vectors: the reference recomputes them in every batch of every epoch;
* class weights from the training targets (scikit-learn's balanced rule) instead of a
  hard-coded per-task table; --gate_class_weights still accepts explicit ones;
* gate 0 reads the masked mean of the embeddings, not [CLS] (constant for every input);
* the checkpoint is chosen by the gate loss without Gumbel noise (the reference's selection
  is noisy); each evaluation also runs the gated model itself on dev -- its task metric, mean
  MACs and the widths its gates choose -- so a gate that always picks one width is visible;
* off-ramps (copies of the final head, as in the reference) can also be distilled from the
  final logits (--train_off_ramps), on the pooled vectors of the full model, cached likewise.

``--gate_training routes`` (:class:`RouteGateStrategy`) trains the gates instead on the routes
they take: trained on their targets' features, gates meet other features at inference (the
widths earlier gates chose), and on MiniLM they did no better than static subnets of their cost
(docs/benchmarks.md).  Each step runs the gated model with straight-through Gumbel choices
(``gate.relaxed``), distils its logits from the full model's and pays for the MACs above
--gate_macs_target (``gate.loss.route_loss``); the checkpoint is chosen by that loss on dev
with argmax routes.  Targets are still computed on dev, to report how the gates' choices
compare with them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import paddle
from tqdm.auto import tqdm

from gate.io import load_gates, load_off_ramps, save_gates, save_off_ramps
from gate.loss import class_weights, gate_loss, macs_share, route_loss, target_features, temperature
from gate.modules import GateRouter, Gates
from gate.ramps import OffRamps, check_ramp_layers, default_ramp_layers, ramp_inputs, ramp_loss
from gate.relaxed import RelaxedOutput, relaxed_classify
from gate.settings import GateSettings, RouteCosts, gate_macs, route_costs
from gate.targets import balanced_accuracy, distribution, majority_rate, width_passes

from ofa_flexbert.train import distributed
from ofa_flexbert.engine.accounting import mean_macs, route_macs, sequence_lengths
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import EpochBatchSampler, TaskSpec, make_loader
from ofa_flexbert.engine.encoder import classify, pooling_of
from ofa_flexbert.errors import UserError
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.store.models import freeze, load_model, save_model
from ofa_flexbert.store.outputs import SubnetResult, read_eval_results, recorded_depth_rule
from ofa_flexbert.engine.routes import Route, Subnet
from ofa_flexbert.train.evaluation import Evaluation
from ofa_flexbert.train.loop import Strategy, total_steps, train
from .begin import start
from .inputs import check_pooling
from .task_data import load_task_data
from ofa_flexbert.app.report import StageReport, finish

logger = logging.getLogger("ofa_flexbert")


@dataclass
class GateData:
    """What gate training needs from one split, computed once: per input its target class, the
    features every gate reads at that target's width [N, G, H], each static width's logits, labels;
    with off-ramps, what each reads in the full model [N, R, H] and the final logits [N, C]."""

    targets: np.ndarray
    features: np.ndarray
    logits: list[np.ndarray]
    labels: np.ndarray
    ramp_features: Optional[np.ndarray] = None
    final_logits: Optional[np.ndarray] = None


def collect(model, loader, settings: GateSettings, task: TaskSpec, tolerance: float, what: str,
            ramps: Optional[OffRamps] = None) -> GateData:
    """:class:`GateData` of every example of ``loader`` (unshuffled), the batches shared among ranks;
    the off-ramps' inputs too when ``ramps`` is given (one more, full-width forward)."""

    def one(batch: dict):
        targets, features, logits = width_passes(model, batch, settings, task, tolerance)
        chosen = np.stack([f.numpy() for f in target_features(features, targets)], axis=1)
        ramp = (None, None)
        if ramps is not None and ramps.layers:
            pooled, final = ramp_inputs(model, batch, ramps)
            ramp = (np.stack([p.numpy() for p in pooled], axis=1), final.numpy())
        return targets, chosen, logits, batch["labels"].numpy(), *ramp

    batches = list(distributed.shard_batches(loader))
    bar = tqdm(batches, desc=f"gate targets ({what})", unit="batch", leave=False,
               disable=not distributed.is_main(), mininterval=1.0)
    parts = distributed.gather([(index, one(batch)) for index, batch in bar])
    with_ramps = parts[0][4] is not None
    return GateData(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    [np.concatenate([p[2][k] for p in parts]) for k in range(settings.num_classes)],
                    np.concatenate([p[3] for p in parts]),
                    np.concatenate([p[4] for p in parts]) if with_ramps else None,
                    np.concatenate([p[5] for p in parts]) if with_ramps else None)


class FeatureSet(paddle.io.Dataset):
    def __init__(self, data: GateData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.targets)

    def __getitem__(self, index: int):
        data = self.data
        if data.ramp_features is None:
            return data.features[index], data.targets[index]
        return data.features[index], data.targets[index], data.ramp_features[index], data.final_logits[index]


def _stack(rows) -> dict[str, paddle.Tensor]:
    batch = {"features": paddle.to_tensor(np.stack([r[0] for r in rows]).astype("float32")),
             "targets": paddle.to_tensor(np.array([r[1] for r in rows], dtype="int64"))}
    if len(rows[0]) > 2:
        batch["ramp_features"] = paddle.to_tensor(np.stack([r[2] for r in rows]).astype("float32"))
        batch["final_logits"] = paddle.to_tensor(np.stack([r[3] for r in rows]).astype("float32"))
    return batch


def feature_loader(data: GateData, args: RunArgs) -> paddle.io.DataLoader:
    """Batches of cached gate features, shuffled per epoch and sharded like the token loaders."""
    sampler = EpochBatchSampler(len(data.targets), args.per_gpu_train_batch_size, shuffle=args.shuffle,
                                seed=args.seed, rank=distributed.rank(), world_size=distributed.world_size())
    return paddle.io.DataLoader(FeatureSet(data), batch_sampler=sampler, collate_fn=_stack, num_workers=0)


class GateModules(paddle.nn.Layer):
    """What the gate stage trains and checkpoints: the gates and the off-ramps (frozen unless
    --train_off_ramps)."""

    def __init__(self, gates: Gates, ramps: OffRamps, train_ramps: bool):
        super().__init__()
        self.gates, self.ramps = gates, ramps
        for param in ramps.parameters():
            param.stop_gradient = not train_ramps

    def forward(self, features: list[paddle.Tensor], ramp_inputs: Optional[list[paddle.Tensor]] = None):
        """(gate logits per gate, off-ramp logits per off-ramp or None): one call, so that data
        parallel averages the gradients of both."""
        return self.gates(features), (None if ramp_inputs is None else self.ramps(ramp_inputs))


class GateStrategy(Strategy):
    """The gates (and off-ramps) trained on cached features; ``self.model`` is what the loop trains."""

    name = "gate"

    def __init__(self, backbone, gates: Gates, tokenizer, task: TaskSpec, args: RunArgs, weights: np.ndarray,
                 steps: int, dev: GateData, dev_loader, ramps: OffRamps):
        self.backbone, self.gates, self.tokenizer, self.task, self.args = backbone, gates, tokenizer, task, args
        self.ramps, self.train_ramps = ramps, bool(args.train_off_ramps and ramps.layers)
        self.model = self.modules()
        self.runner = distributed.data_parallel(self.model)
        self.weights, self.steps, self.dev, self.dev_loader = weights, steps, dev, dev_loader
        self.subnets = [Subnet(w, 1.0) for w in gates.settings.gate_setting]
        self.step = 0
        self.static = self._static_results()

    def modules(self) -> GateModules:
        """What this strategy trains and checkpoints."""
        return GateModules(self.gates, self.ramps, self.train_ramps)

    def resume_at(self, step: int) -> None:
        self.step = step

    def train_step(self, batch: dict) -> dict[str, float]:
        tau = temperature(self.step, self.steps)
        features = batch["features"]
        pooled = None
        if self.train_ramps:
            pooled = [batch["ramp_features"][:, r] for r in range(len(self.ramps.layers))]
        logits, ramp_logits = self.runner([features[:, g] for g in range(self.gates.settings.num_gates)], pooled)
        loss = gate_loss(logits, batch["targets"].numpy(), self.weights, tau)
        logs = {"gate_loss": float(loss), "tau": tau}
        if self.train_ramps:
            distill = ramp_loss(ramp_logits, batch["final_logits"])
            logs["ramp_loss"] = float(distill)
            loss = loss + distill
        loss.backward()
        self.step += 1
        return {"loss": float(loss), **logs}

    def _static_results(self) -> list[SubnetResult]:
        """The uniform subnets that define the targets, at full depth (constant: the backbone is frozen)."""
        config, lengths = self.backbone.bert.config, sequence_lengths(self.dev_loader)
        results = []
        for width, logits in zip(self.gates.settings.gate_setting, self.dev.logits):
            metrics = compute_metrics(self.task, logits, self.dev.labels)
            single = None if self.task.is_regression else len(np.unique(predictions(self.task, logits))) == 1
            results.append(SubnetResult(width, 1.0, metrics, mean_macs(config, width, 1.0, lengths), single))
        return results

    def routed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gated model on dev: logits [N, C], each input's MACs [N] and each gate's class [G, N]."""
        config, settings = self.backbone.bert.config, self.gates.settings
        lengths = sequence_lengths(self.dev_loader)
        pooling = pooling_of(self.backbone.bert)
        parts = []
        self.model.eval()
        with paddle.no_grad():
            for index, batch in distributed.shard_batches(self.dev_loader):
                rows = int(batch["input_ids"].shape[0])
                router = GateRouter(self.gates, config, rows)
                out = classify(self.backbone, batch["input_ids"], batch["token_type_ids"],
                               Route.uniform(config), hook=router)
                start = index * self.dev_loader.batch_sampler.batch_size
                macs = [route_macs(config, route, t) + gate_macs(settings, config.hidden_size, t, pooling)
                        for route, t in zip(out.routes, lengths[start:start + rows])]
                parts.append((index, (out.logits.numpy(), np.array(macs, dtype="float64"), router.decisions)))
        gathered = distributed.gather(parts)
        return (np.concatenate([p[0] for p in gathered]), np.concatenate([p[1] for p in gathered]),
                np.concatenate([p[2] for p in gathered], axis=1))

    def evaluate(self, task, dev_loaders) -> Evaluation:
        settings, task, dev = self.gates.settings, self.task, self.dev
        self.model.eval()
        with paddle.no_grad():
            logits = self.gates([paddle.to_tensor(dev.features[:, g]) for g in range(settings.num_gates)])
            loss = float(gate_loss(logits, dev.targets, self.weights, tau=None))
            ramps, ramp_total = self.ramp_results()
        at_target = [l.numpy().argmax(-1) for l in logits]
        gated_logits, macs, decisions = self.routed()
        metrics = compute_metrics(task, gated_logits, dev.labels)
        full = mean_macs(self.backbone.bert.config, 1.0, 1.0, sequence_lengths(self.dev_loader))
        majority = majority_rate(dev.targets, settings.num_classes)
        gates = []
        for g in range(settings.num_gates):
            chosen = decisions[g]
            gates.append({"accuracy": float((chosen == dev.targets).mean()),
                          "balanced_accuracy": balanced_accuracy(dev.targets, chosen),
                          "accuracy_at_target_width": float((at_target[g] == dev.targets).mean()),
                          "balanced_accuracy_at_target_width": balanced_accuracy(dev.targets, at_target[g]),
                          "majority_rate": majority,
                          "chance_balanced_accuracy": 1.0 / len(np.unique(dev.targets)),
                          "chosen_distribution": distribution(chosen, settings.num_classes),
                          "single_class": bool(len(np.unique(chosen)) == 1)})
        gated = {"metrics": metrics, "macs": float(macs.mean()), "macs_share": float(macs.mean() / full),
                 "single_class": None if task.is_regression else
                 bool(len(np.unique(predictions(task, gated_logits))) == 1)}
        extra = {"gate_loss": loss, "gated": gated, "gates": gates, "off_ramps": ramps,
                 "targets": {"distribution": distribution(dev.targets, settings.num_classes), "majority_rate": majority},
                 "settings": settings.to_json(), **self.training_record()}
        scalars = {"eval/gate_loss": loss, f"eval/gated/{task.primary_metric}": metrics[task.primary_metric],
                   "eval/gated/macs_share": gated["macs_share"],
                   **{f"eval/gate{g}/{key}": s[key] for g, s in enumerate(gates)
                      for key in ("accuracy", "balanced_accuracy")}}
        collapsed = [g for g, s in enumerate(gates) if s["single_class"]]
        summary = (f"gate loss {loss:.4f}; gate accuracy " + " ".join(f"{s['accuracy']:.3f}" for s in gates) +
                   f" (majority {majority:.3f}), balanced " +
                   " ".join(f"{s['balanced_accuracy']:.3f}" for s in gates) +
                   f" (chance {gates[0]['chance_balanced_accuracy']:.3f}); gated {task.primary_metric}={metrics[task.primary_metric]:.4f} "
                   f"at {gated['macs_share']:.0%} of the full model's MACs" +
                   (f"; ONE CLASS from gate(s) {', '.join(map(str, collapsed))}" if collapsed else ""))
        for ramp in ramps:
            scalars[f"eval/ramp{ramp['layer']}/{task.primary_metric}"] = ramp["metrics"][task.primary_metric]
        if self.train_ramps:
            scalars["eval/ramp_loss"] = ramp_total
            summary += f"; off-ramp loss {ramp_total:.4f}"
        selected, note = self.selection_loss(loss, gated_logits, gated, scalars, extra)
        return Evaluation(self.static, -(selected + (ramp_total if self.train_ramps else 0.0)), summary + note,
                          scalars, extra)

    def selection_loss(self, target_loss: float, gated_logits: np.ndarray, gated: dict, scalars: dict,
                       extra: dict) -> tuple[float, str]:
        """(the dev loss the checkpoint is chosen by, what to add to the log line): here the gate loss
        against the targets; the off-ramps' loss is added when they train."""
        return target_loss, ""

    def ramp_results(self) -> tuple[list[dict], float]:
        """Per off-ramp on dev: its task metrics if every input left there, its agreement with the
        final classifier; and the mean distillation loss (what --train_off_ramps lowers)."""
        dev = self.dev
        if dev.ramp_features is None:
            return [], 0.0
        final = paddle.to_tensor(dev.final_logits)
        pooled = [paddle.to_tensor(dev.ramp_features[:, r]) for r in range(len(self.ramps.layers))]
        results, ramp_logits = [], self.ramps(pooled)
        for layer, logits in zip(self.ramps.layers, ramp_logits):
            logits = logits.numpy()
            results.append({"layer": layer, "metrics": compute_metrics(self.task, logits, dev.labels),
                            "agreement_with_final": float((logits.argmax(-1) == dev.final_logits.argmax(-1)).mean())})
        return results, float(ramp_loss(ramp_logits, final))

    def save(self, output_dir: str) -> None:
        """The unchanged backbone (a complete model directory) and the gates beside it."""
        save_model(self.backbone, self.tokenizer, output_dir)
        save_gates(self.gates, output_dir, self.training_record())
        save_off_ramps(self.ramps, output_dir)

    def training_record(self) -> dict[str, Any]:
        """How the gates were trained, saved in gates.json."""
        return {"gate_training": "targets", "class_weights": [float(w) for w in self.weights]}


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
    """``--gate_training routes``: the gates learn from the routes they take (module docstring).

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


def gate_settings(args: RunArgs, num_layers: int) -> GateSettings:
    """The gates the flags ask for, or the one-line error naming the flag that is wrong."""
    try:
        return GateSettings(args.num_gates or num_layers, num_layers, tuple(args.gate_setting),
                            tuple(args.width_mult_list))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def off_ramps(args: RunArgs, task: TaskSpec, model) -> OffRamps:
    """Off-ramps after --off_ramps (default :func:`gate.ramps.default_ramp_layers`), copies of the final head.

    Exit heads are classifiers (the exit rule is an entropy): a regression task gets none, and
    asking for them there is an error.
    """
    if task.is_regression:
        if args.off_ramps:
            raise UserError(f"--off_ramps: early exit needs a classification task; {task.name} is a regression task")
        return OffRamps(model.bert.config.hidden_size, 1, [])
    layers = list(args.off_ramps) or default_ramp_layers(model.bert.config.num_hidden_layers)
    try:
        check_ramp_layers(layers, model.bert.config.num_hidden_layers)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return OffRamps.from_model(model, sorted(set(layers)))


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


def run(args: RunArgs) -> StageReport:
    """``--stage gate``: train width gates on the frozen input model; keep the lowest dev gate loss."""
    task, tokenizer = start(args)
    data = load_task_data(args, task, tokenizer)
    backbone = freeze(load_model(args.model_dir, task.num_labels, require_classifier=True))
    backbone.bert.config.pooling = check_pooling(args)
    settings = gate_settings(args, backbone.bert.config.num_hidden_layers)
    ramps = off_ramps(args, task, backbone)
    paddle.seed(args.seed)
    gates = Gates(backbone.bert.config.hidden_size, settings)
    dev_loader = next(iter(data.dev_loaders.values()))
    tolerance = args.regression_tolerance
    dev_data = collect(backbone, dev_loader, settings, task, tolerance, "dev", ramps)
    extra: dict[str, Any] = {"gate_settings": settings.to_json(), "gate_training": args.gate_training,
                             "depth_rule": recorded_depth_rule(args.model_dir)}
    if args.gate_training == "routes":
        extra["gates_started_from"] = start_from_saved(args, gates, ramps)
        if distributed.is_main():
            logger.info(f"gate training on routes: the full model distilled through the gates' own routes, MACs "
                        f"above {args.gate_macs_target:.0%} of the full model's weighted {args.gate_cost_weight:g}; "
                        + (f"starting from the gates in {args.model_dir}" if extra["gates_started_from"]
                           else "gates initialised at random"))
        loader = data.train_loader
        strategy: GateStrategy = RouteGateStrategy(backbone, gates, tokenizer, task, args, total_steps(args, len(loader)),
                                                   dev_data, dev_loader, ramps)
    else:
        train_tokens = make_loader(data.train_loader.dataset, tokenizer, args.per_gpu_eval_batch_size)
        train_data = collect(backbone, train_tokens, settings, task, tolerance, "train",
                             ramps if args.train_off_ramps else None)
        weights = (np.array(args.gate_class_weights, dtype="float64") if args.gate_class_weights
                   else class_weights(train_data.targets, settings.num_classes))
        shares = distribution(train_data.targets, settings.num_classes)
        if distributed.is_main():
            logger.info("gate targets (train): " + ", ".join(f"w{w:g} {s:.1%}" for w, s in zip(settings.gate_setting, shares))
                        + "; class weights " + ", ".join(f"{w:.3g}" for w in weights))
        loader = feature_loader(train_data, args)
        strategy = GateStrategy(backbone, gates, tokenizer, task, args, weights, total_steps(args, len(loader)),
                                dev_data, dev_loader, ramps)
        extra.update({"train_target_distribution": shares, "class_weights": [float(w) for w in weights]})
    result = train(strategy, task, args, loader, data.dev_loaders, initial_best=-np.inf)
    # The gated row of the best evaluation, as saved: a resumed run's best may predate this process.
    saved = read_eval_results(args.output_dir) or {}
    extra["gated"] = saved.get("gated")
    return finish(args, task, data, result, extra, gated=extra["gated"])
