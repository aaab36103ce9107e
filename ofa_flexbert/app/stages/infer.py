"""Stage ``infer``: static, width-, depth- and width+depth-dynamic inference on dev, batched,
with each input's route and cost (docs/reference.md, Inference modes).

Every mode is one call of the routed encoder (``encoder.classify``) with a hook: the gates
(``GateRouter``) pick widths, the exit check (``ExitCheck``) retires inputs, both chained in the
reference's order (the exit check first).  Inputs of one batch take different routes, so any
``--per_gpu_eval_batch_size`` gives the predictions of batch size 1 (the reference needs 1).

Cost per input is counted from the route it took at its real length: its layers at their widths,
the head at its exit, the gates that ran and the exit checks it passed (``accounting.route_macs``,
``gate.settings.gate_macs``, ``adaptive.cost.exit_check_macs``).  A static subnet runs no gates: it
needs none, so none are counted (the reference runs and counts them in every mode).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import paddle

from ofa_flexbert.adaptive.cascade import CascadeRun
from ofa_flexbert.adaptive.runner import DynamicModel, depth_rule_for
from ofa_flexbert.adaptive.setting import MODES, Mode, Plan, read_inference_config

from ofa_flexbert.engine.accounting import mean_macs, sequence_lengths
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.data import make_loader
from ofa_flexbert.errors import UserError
from ofa_flexbert.glue.metrics import compute_metrics, predictions
from ofa_flexbert.store.outputs import write_infer_results, write_run_info
from ofa_flexbert.engine.routes import Route
from .begin import start
from .inputs import check_pooling
from .preamble import decision_modules, dev_data, evaluation_model
from ofa_flexbert.app.report import StageReport

logger = logging.getLogger("ofa_flexbert")

LATENCY_INPUTS = 500  # dev inputs timed at batch 1 (after WARMUP): enough for a stable median and p90
WARMUP = 10
THROUGHPUT_BATCH = 32


def with_inference_config(args: RunArgs, task: str) -> RunArgs:
    """``args`` with the mode flags replaced by the --inference_config entry of ``task``."""
    import dataclasses

    if not args.inference_config:
        return args
    given = [m for m in MODES if getattr(args, m)]
    if given:
        raise UserError(f"--inference_config and --{given[0]}: give one of them (the file names the mode)")
    entry = read_inference_config(args.inference_config, task)
    values: dict[str, Any] = {m: m == entry["mode"] for m in MODES}
    widths = [float(w) for w in entry.get("width_mult_list", args.width_mult_list)]
    if entry["mode"] == Mode.CASCADE:
        values.update(cascade=widths, cascade_depths=[float(d) for d in entry.get("cascade_depths", [])],
                      cascade_thresholds=[float(t) for t in entry.get("cascade_thresholds", [])])
    else:
        values.update(cascade=[], width_mult_list=widths)
    values["depth_mult_list"] = [float(entry.get("depth_mult", 1.0))]
    for key in ("early_exit", "exit_threshold", "normalized_entropy", "gate_threshold"):
        if key in entry:
            values[key] = entry[key]
    if entry.get("quantize"):
        logger.info(f"infer {task}: {args.inference_config} names the {entry['quantize'].upper()} form of the setting; "
                    "infer runs the float model (--stage export --inference_config checks and writes that form)")
    return dataclasses.replace(args, **values)


def plan_of(args: RunArgs) -> Plan:
    """The one mode the flags name, checked: a one-line error for none, two, or a static mode with
    different widths."""
    modes = [m for m in MODES if getattr(args, m)]
    if len(modes) != 1:
        raise UserError("--stage infer: give exactly one of --static, --w_dynamic, --d_dynamic, --wd_dynamic, --cascade"
                        + (f" (got {', '.join('--' + m for m in modes)})" if modes else ""))
    mode, widths = Mode(modes[0]), tuple(args.width_mult_list)
    if mode is Mode.CASCADE:
        return cascade_plan(args)
    if not mode.gated and len(set(widths)) != 1:
        raise UserError(f"--{mode}: one width for every input, so --width_mult_list needs identical values "
                        f"(e.g. 0.5,0.5,0.5,0.5), got {','.join(f'{w:g}' for w in widths)}")
    if mode is Mode.D_DYNAMIC and not args.early_exit:
        raise UserError("--d_dynamic: depth-dynamic inference exits early; add --early_exit")
    if mode.can_exit and args.depth_mult_list[0] != 1.0:
        raise UserError(f"--{mode}: early exit starts from the full model; --depth_mult_list must be 1.0, "
                        f"got {args.depth_mult_list[0]:g}")
    if args.fixed_gate is not None and not mode.gated:
        raise UserError(f"--fixed_gate: replaces the gates' decisions, so it needs --w_dynamic or --wd_dynamic "
                        f"(got --{mode})")
    if args.gate_threshold is not None and (not mode.gated or args.fixed_gate is not None):
        raise UserError("--gate_threshold: a rule for the gates' decisions, so it needs --w_dynamic or --wd_dynamic "
                        + ("without --fixed_gate" if mode.gated else f"(got --{mode})"))
    return Plan(mode=mode, widths=widths, depth_mult=args.depth_mult_list[0], early_exit=args.early_exit,
                exit_threshold=args.exit_threshold, normalized_entropy=args.normalized_entropy,
                fixed_gate=args.fixed_gate, gate_threshold=args.gate_threshold)


def cascade_plan(args: RunArgs) -> Plan:
    """The --cascade plan the flags give, or a one-line error naming the flag that does not fit."""
    widths, depths = tuple(args.cascade), tuple(args.cascade_depths) or (1.0,) * len(args.cascade)
    thresholds = tuple(args.cascade_thresholds)
    if len(widths) < 2:
        raise UserError(f"--cascade: needs two or more subnet widths, cheapest first, got {len(widths)}")
    if len(depths) != len(widths):
        raise UserError(f"--cascade_depths: one depth per --cascade subnet ({len(widths)}), got {len(depths)}")
    if len(thresholds) == 1:
        thresholds *= len(widths) - 1
    if len(thresholds) != len(widths) - 1:
        raise UserError(f"--cascade_thresholds: one threshold, or one per subnet but the last ({len(widths) - 1}), "
                        f"got {len(thresholds)}")
    if any(not t > 0 for t in thresholds):
        raise UserError("--cascade_thresholds: each must be positive (an input stops when its entropy is below it), "
                        "got " + ",".join(f"{t:g}" for t in thresholds))
    for name, values in (("--cascade", widths), ("--cascade_depths", depths)):
        if any(not 0.0 < v <= 1.0 for v in values):
            raise UserError(f"{name}: each must be in (0, 1], got " + ",".join(f"{v:g}" for v in values))
    return Plan(mode=Mode.CASCADE, widths=widths, depths=depths, thresholds=thresholds,
                normalized_entropy=args.normalized_entropy)


def timed(dynamic: DynamicModel, loader) -> list[float]:
    """Seconds per batch of ``loader`` (model time only: collation excluded)."""
    seconds = []
    for batch in loader:
        start = time.perf_counter()
        dynamic.run(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def run(args: RunArgs) -> StageReport:
    """``--stage infer``: run the plan on dev; write infer_results.json and predictions.jsonl."""
    task, tokenizer = start(args)
    args = with_inference_config(args, task.name)
    plan = plan_of(args)
    if (plan.exits or plan.mode is Mode.CASCADE) and task.is_regression:
        flag = "--cascade" if plan.mode is Mode.CASCADE else "--early_exit"
        raise UserError(f"{flag}: stopping early uses a classifier's entropy; {task.name} is a regression task")
    model = evaluation_model(args.model_dir, task, check_pooling(args))
    gates, ramps = decision_modules(args.model_dir, plan, f"--{plan.mode}", "--early_exit")
    dynamic = DynamicModel(model, gates, ramps, plan, depth_rule_for(args.model_dir, plan))
    dev = dev_data(args, task, tokenizer)
    split, dataset, loader = dev.split, dev.dataset, dev.loader
    lengths = sequence_lengths(loader)
    started = time.time()
    logits, routes = [], []
    for batch in loader:
        batch_logits, batch_routes = dynamic.run(batch)
        logits.append(batch_logits)
        routes.extend(batch_routes)
    logits = np.concatenate(logits)
    labels = np.array([row["labels"] for row in dataset])
    metrics = compute_metrics(task, logits, labels)
    macs = np.array([dynamic.macs(r, t) for r, t in zip(routes, lengths)], dtype="float64")
    full = mean_macs(model.bert.config, 1.0, 1.0, lengths)
    layers_run = np.array([len(r.executed) for r in routes])
    timing = latency(dynamic, dataset, tokenizer)
    summary: dict[str, Any] = {
        "task": task.name, "split": split, "mode": plan.mode.value, "width_mult_list": list(plan.widths),
        "fixed_gate": plan.fixed_gate, "gate_threshold": plan.gate_threshold if plan.gated else None,
        "depth_mult": plan.depth_mult, "early_exit": plan.exits,
        "exit_threshold": plan.exit_threshold if plan.exits else None,
        "normalized_entropy": plan.normalized_entropy if plan.exits or plan.mode is Mode.CASCADE else None,
        **(cascade_summary(plan, routes) if plan.mode is Mode.CASCADE else {}), "metric": task.primary_metric,
        "metrics": metrics, "macs": float(macs.mean()), "full_macs": float(full),
        "macs_share": float(macs.mean() / full), "reduction": float(1 - macs.mean() / full),
        "mean_layers": float(layers_run.mean()),
        "exit_histogram": {str(k): int(v) for k, v in zip(*np.unique(layers_run, return_counts=True))},
        "width_histogram": width_histogram(routes, model.bert.config.num_hidden_layers),
        "examples": len(routes), "batch_size": args.per_gpu_eval_batch_size, **timing,
        "seconds": round(time.time() - started, 1),
    }
    write_outputs(args.output_dir, summary, routes, logits, labels, macs, task)
    logger.info(f"infer {task.name} {plan.mode}: {task.primary_metric}={metrics[task.primary_metric]:.4f} at "
                f"{summary['macs_share']:.0%} of the full model's MACs, {summary['mean_layers']:.2f} layers on average")
    write_run_info(args, task.name, {"complete": True, "mode": plan.mode.value})
    return StageReport("infer", task.name, args.output_dir, task.primary_metric, seconds=summary["seconds"],
                       gated={"metrics": metrics, "macs_share": summary["macs_share"], "label": plan.mode.value})


def cascade_summary(plan: Plan, runs: list) -> dict[str, Any]:
    """A cascade's subnets and thresholds, and how many inputs each subnet answered."""
    answered = np.bincount([len(r.routes) - 1 for r in runs], minlength=len(plan.stages))
    return {"cascade_depths": list(plan.depths), "cascade_thresholds": list(plan.thresholds),
            "answered_by_stage": [int(n) for n in answered]}


def width_histogram(routes: list[Route], num_layers: int) -> dict[str, dict[str, int]]:
    """Per encoder layer, how many inputs ran it with how many heads."""
    counts: dict[str, dict[str, int]] = {str(i): {} for i in range(num_layers)}
    for route in routes:
        for layer, width in route.executed:
            cell = counts[str(layer)]
            cell[str(width.heads)] = cell.get(str(width.heads), 0) + 1
    return counts


def latency(dynamic: DynamicModel, dataset, tokenizer) -> dict[str, float]:
    """Per input at batch 1 (median and p90 in ms, warm-up excluded) and throughput at batch 32, on the
    first inputs of the split (:data:`LATENCY_INPUTS`): the device in use, model time only."""
    from paddlenlp.datasets import MapDataset

    subset = MapDataset([dataset[i] for i in range(min(len(dataset), LATENCY_INPUTS + WARMUP))])
    single = timed(dynamic, make_loader(subset, tokenizer, 1))[WARMUP:] or [float("nan")]
    batched = timed(dynamic, make_loader(subset, tokenizer, THROUGHPUT_BATCH))
    return {"latency_ms_batch1_median": float(np.median(single) * 1e3),
            "latency_ms_batch1_p90": float(np.percentile(single, 90) * 1e3),
            "throughput_per_s_batch32": float(len(subset) / sum(batched)),
            "latency_inputs": len(single), "device": paddle.get_device()}


def write_outputs(output_dir: str, summary: dict, routes: list[Route], logits: np.ndarray, labels: np.ndarray,
                  macs: np.ndarray, task) -> None:
    """infer_results.json (the summary) and predictions.jsonl (one row per input), atomically."""
    preds = predictions(task, logits)
    rows = [{"index": i, "label": labels[i].item(), "prediction": preds[i].item(),
             "layers": [layer for layer, _ in r.executed], "heads": [w.heads for _, w in r.executed],
             "exit_after": len(r.executed), "macs": int(m), **({"stages": len(r.routes)} if isinstance(r, CascadeRun) else {})}
            for i, (r, m) in enumerate(zip(routes, macs))]
    write_infer_results(output_dir, summary, rows)
