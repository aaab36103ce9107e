"""Stage ``gate``: width gates (``gate/``) trained on a frozen backbone (docs/reference.md, Gate training and selection).

The input is a depth- or final-stage model; its weights are never changed (a test checks they
are bit-identical).  What differs from the reference, each a recorded decision (docs/decisions.md):

* targets in eval mode (the reference's train-mode dropout makes them random, docs/reference.md, Gate targets);
* each gate trains on every input's features at every --gate_setting width (--gate_features
  all_widths), not only at its target's width, where the width gives the target away and gates
  learn to copy the previous gate's choice; --gate_target agree as a second target rule;
* because the backbone is frozen and targets are deterministic, every input's targets and the
  features each gate reads at its target's width are computed **once** (one no-gradient
  forward per --gate_setting width over the training set), and the gates then train on those
  cached vectors: the reference recomputes them in every batch of every epoch;
* class weights from the training targets (scikit-learn's balanced rule) instead of a
  hard-coded per-task table; --gate_class_weights still accepts explicit ones;
* gate 0 reads the masked mean of the embeddings, not [CLS] (constant for every input);
* the checkpoint is chosen by the gate loss without Gumbel noise (the reference's selection
  is noisy); each evaluation also runs the gated model itself on dev -- its task metric, mean
  MACs and the widths its gates choose -- so a gate that always picks one width is visible, and
  judges it against its routes dealt out at random and perfect gates (``gate_evidence``);
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
from typing import Any

import numpy as np
import paddle

from gate.loss import class_weights
from gate.modules import Gates
from gate.ramps import OffRamps, check_ramp_layers, default_ramp_layers
from gate.settings import GateSettings
from gate.targets import distribution

from ofa_flexbert.train import distributed
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import TaskSpec, make_loader
from ofa_flexbert.errors import UserError
from ofa_flexbert.store.models import freeze, load_model
from ofa_flexbert.store.outputs import read_eval_results, recorded_depth_rule
from ofa_flexbert.train.loop import total_steps, train
from .begin import start
from .inputs import check_pooling
from .task_data import load_task_data
from ofa_flexbert.app.report import StageReport, finish

from .gate_routes import RouteGateStrategy, start_from_saved
from .gate_data import collect, feature_loader
from .gate_targets import GateStrategy

logger = logging.getLogger("ofa_flexbert")


def gate_settings(args: RunArgs, num_layers: int, num_labels: int) -> GateSettings:
    """The gates the flags ask for, or the one-line error naming the flag that is wrong."""
    try:
        return GateSettings(args.num_gates or num_layers, num_layers, tuple(args.gate_setting),
                            tuple(args.width_mult_list), num_labels if args.gate_inputs == "pooled+probe" else 0)
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


def run(args: RunArgs) -> StageReport:
    """``--stage gate``: train width gates on the frozen input model; keep the lowest dev gate loss."""
    task, tokenizer = start(args)
    data = load_task_data(args, task, tokenizer)
    backbone = freeze(load_model(args.model_dir, task.num_labels, require_classifier=True))
    backbone.bert.config.pooling = check_pooling(args)
    settings = gate_settings(args, backbone.bert.config.num_hidden_layers, task.num_labels)
    ramps = off_ramps(args, task, backbone)
    paddle.seed(args.seed)
    gates = Gates(backbone.bert.config.hidden_size, settings)
    gates.copy_probes(backbone)
    dev_loader = next(iter(data.dev_loaders.values()))
    tolerance = args.regression_tolerance
    dev_data = collect(backbone, dev_loader, settings, task, tolerance, args.gate_target, "dev", ramps)
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
        train_data = collect(backbone, train_tokens, settings, task, tolerance, args.gate_target, "train",
                             ramps if args.train_off_ramps else None)
        weights = (np.array(args.gate_class_weights, dtype="float64") if args.gate_class_weights
                   else class_weights(train_data.targets, settings.num_classes))
        shares = distribution(train_data.targets, settings.num_classes)
        if distributed.is_main():
            logger.info(f"gate targets (train, {args.gate_target}): "
                        + ", ".join(f"w{w:g} {s:.1%}" for w, s in zip(settings.gate_setting, shares))
                        + "; class weights " + ", ".join(f"{w:.3g}" for w in weights)
                        + ("; each gate trains on every input at every width" if args.gate_features == "all_widths"
                           else "; each gate trains on every input at its target's width (the reference's)"))
        loader = feature_loader(train_data, args)
        strategy = GateStrategy(backbone, gates, tokenizer, task, args, weights, total_steps(args, len(loader)),
                                dev_data, dev_loader, ramps)
        extra.update({"train_target_distribution": shares, "class_weights": [float(w) for w in weights]})
    result = train(strategy, task, args, loader, data.dev_loaders, initial_best=-np.inf)
    # The routed rows of the best evaluation, as saved: a resumed run's best may predate this process.
    saved = read_eval_results(args.output_dir) or {}
    extra["gated"] = saved.get("gated")
    baselines = [{**saved[key], "label": label} for key, label in BASELINES if saved.get(key)]
    report = finish(args, task, data, result, extra, gated=extra["gated"])
    report.baselines = baselines
    if extra["gated"] and saved.get("random_routes") and distributed.is_main():
        say_if_not_routing(task, extra["gated"], saved["random_routes"])
    return report


BASELINES = (("random_routes", "random routes"), ("oracle", "perfect gates"))  # eval_results.json key, table label


def say_if_not_routing(task: TaskSpec, gated: dict, random: dict) -> None:
    """One line when the chosen gates do no better than their own routes dealt out at random."""
    metric = task.primary_metric
    ours, theirs = gated["metrics"][metric], random["metrics"][metric]
    if not ours > theirs:
        logger.warning(f"gate {task.name}: the gated model ({metric} {ours:.4f}) is no better than its routes dealt "
                       f"out at random ({theirs:.4f}, mean of {len(random['seeds'])} deals): its gates do not route "
                       "by input; a static subnet of its cost is as good")
