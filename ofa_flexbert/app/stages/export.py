"""Stage ``export``: write each chosen subnet as a smaller static model for Paddle Inference, checked.

    python run_ofa_glue.py --task sst-2 --stage export --model_dir WD --width_mult 0.5 --depth_mult 0.75 --output_dir OUT

Each subnet (``--width_mult``/``--depth_mult`` pairs, or the static setting of an
``--inference_config``) goes to ``OUT/w<w>_d<d>/``: the pruned graph, the tokenizer and
``manifest.json`` (widths, layers, heads and FFN per layer, parameters, MACs, pooling, the check,
versions).  Every subnet starts from a fresh load of ``--model_dir``, so exporting several never
compounds the pruning.

The check (a decision: a deployment that silently differs from what was evaluated is the
worst failure an export can have): the exported graph runs under Paddle Inference on every dev
example and its logits must equal the flexible model's for that route (``encoder.classify``)
within :data:`TOLERANCE` on the reference kernels, and within :data:`KERNEL_TOLERANCE` with
oneDNN (how it is deployed) and on onnxruntime (``--format onnx``); the figures are printed and
recorded.  A subnet is written to a hidden folder first and moved into place only when it passed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import paddle

from ofa_flexbert.engine.accounting import mean_macs, route_macs, sequence_lengths
from ofa_flexbert.store.atomic import replace_dir, staging
from ofa_flexbert.config import RunArgs
from ofa_flexbert.adaptive.setting import Mode, Plan, read_inference_config
from ofa_flexbert.app.console import quiet_native
from ofa_flexbert.engine.encoder import classify
from ofa_flexbert.errors import UserError
from ofa_flexbert.deploy.graphs import ONNX_OPSET, save_onnx, save_static
from ofa_flexbert.deploy.layout import MANIFEST, ONNX_FILE, SEGMENTS, route_description, write_manifest
from ofa_flexbert.deploy.narrow import parameter_count, shrink
from ofa_flexbert.deploy.quantize import combined, int8_tag, quantize_folder, quantize_onnx
from ofa_flexbert.glue.metrics import compute_metrics
from ofa_flexbert.store.outputs import package_versions, recorded_depth_rule, write_export_results, write_run_info
from ofa_flexbert.deploy.predictor import Predictor
from ofa_flexbert.engine.routes import Route, subnet_tag
from .begin import math_threads, start
from .inputs import check_pooling
from .preamble import decision_modules, dev_data, evaluation_model, id_batches
from ofa_flexbert.app.report import StageReport

logger = logging.getLogger("ofa_flexbert")

# Max |Δlogits| between the exported graph and the flexible model.  On Paddle Inference's reference
# kernels (oneDNN off) the graph must compute the same function (measured on all-MiniLM-L6-v2, SST-2
# dev: 0.0).  Runtimes with kernels of their own sum in another order (measured: oneDNN 2.0e-5,
# onnxruntime 1.4e-5, every prediction the same) and only have to agree to KERNEL_TOLERANCE.
TOLERANCE = 1e-5
KERNEL_TOLERANCE = 1e-3
# A dynamic export's routes depend on argmaxes and thresholds: float noise may flip an input at a
# boundary, so a small share of routes may differ (their logits are not compared).
ROUTE_AGREEMENT = 0.99


def dynamic_setting(args: RunArgs, task: str) -> Optional[dict[str, Any]]:
    """The --inference_config entry when it names a gated, early-exit or cascade mode, else None."""
    if not args.inference_config:
        return None
    entry = read_inference_config(args.inference_config, task)
    if entry["mode"] == Mode.STATIC:
        return None
    if args.format == "onnx" and entry["mode"] != Mode.CASCADE and args.dynamic_graphs != "segments":
        raise UserError(f"--format onnx: a {entry['mode']} export of per-layer graphs (--dynamic_graphs layers) runs "
                        "its decisions in dygraph, on Paddle Inference only; segment graphs have an ONNX form")
    return entry


def quantize_as_chosen(args: RunArgs, task: str) -> RunArgs:
    """``args`` with --quantize int8 when the --inference_config entry is an INT8 setting (``--stage search
    --quantize int8`` chose it): the export a user deploys is then the one that was priced and measured."""
    if not args.inference_config or args.quantize == "int8":
        return args
    if read_inference_config(args.inference_config, task).get("quantize") != "int8":
        return args
    logger.info(f"export {task}: {args.inference_config} names an INT8 setting: --quantize int8")
    return dataclasses.replace(args, quantize="int8")


def requested_subnets(args: RunArgs, task: str) -> list[tuple[float, float]]:
    """The (width, depth) pairs to export: --width_mult/--depth_mult, or a static --inference_config."""
    if args.inference_config:
        if args.width_mult or args.depth_mult:
            raise UserError("--inference_config and --width_mult/--depth_mult: give one of them")
        entry = read_inference_config(args.inference_config, task)
        widths = entry.get("width_mult_list") or [1.0]
        return [(float(widths[0]), float(entry.get("depth_mult", 1.0)))]
    widths, depths = list(args.width_mult), list(args.depth_mult)
    if not widths and not depths:
        raise UserError("--stage export: name the subnets with --width_mult and --depth_mult (e.g. --width_mult "
                        "0.5 --depth_mult 0.75), or give --inference_config")
    widths, depths = widths or [1.0], depths or [1.0]
    if len(widths) == 1:
        widths = widths * len(depths)
    if len(depths) == 1:
        depths = depths * len(widths)
    if len(widths) != len(depths):
        raise UserError(f"--width_mult and --depth_mult pair up in order: got {len(args.width_mult)} widths and "
                        f"{len(args.depth_mult)} depths (give as many of each, or one of either)")
    return list(dict.fromkeys(zip(widths, depths)))  # in order, duplicates once


def check_targets(args: RunArgs, tags: list[str]) -> None:
    """Refuse, before any work, to replace an earlier export unless --overwrite_output_dir."""
    if args.overwrite_output_dir:
        return
    for tag in tags:
        if os.path.exists(os.path.join(args.output_dir, tag)):
            raise UserError(f"--output_dir {args.output_dir}: already holds an export of {tag}; "
                            "pass --overwrite_output_dir to replace it")


@dataclass
class ExportJob:
    """What every export of one run shares: the flags, the task and its tokenizer, the model's pooling
    and depth rule, and dev as the checks read it (batches of ids, labels, lengths, pairs or not)."""

    args: RunArgs
    task: Any
    tokenizer: Any
    pooling: str
    rule: str
    batches: list
    labels: np.ndarray
    lengths: list[int]
    text_pair: bool


def export_one(job: ExportJob, width: float, depth: float) -> dict[str, Any]:
    """Export one subnet into ``OUT/<tag>``; return its manifest.  Nothing is moved into place unless it passes."""
    args, task, tokenizer, pooling, rule = job.args, job.task, job.tokenizer, job.pooling, job.rule
    batches, labels, lengths, text_pair = job.batches, job.labels, job.lengths, job.text_pair
    tag = subnet_tag(width, depth)
    model = fresh_model(args, task, pooling)
    config = model.bert.config
    route = Route.uniform(config, width, depth, rule)
    with paddle.no_grad():
        expected = np.concatenate([classify(model, paddle.to_tensor(ids), paddle.to_tensor(types), routes=route)
                                   .logits.numpy() for ids, types in batches])
    full_parameters = parameter_count(model)
    shrink(model, route)
    length = args.max_seq_length
    with staging(args.output_dir, tag) as tmp:
        with quiet_native(args.verbose):
            graph = save_static(model, tmp)
        tokenizer.save_pretrained(tmp)
        manifest: dict[str, Any] = {
            "kind": "static", "tag": tag, "task": task.name, "num_labels": task.num_labels, "labels": list(task.labels or []),
            "text_pair": text_pair, "max_seq_length": length, "pooling": pooling,
            "format": os.path.basename(graph), "width_mult": width, "depth_mult": depth, "depth_rule": rule,
            **route_description(route), "hidden_size": config.hidden_size,
            "full_layers": config.num_hidden_layers, "full_heads": config.num_attention_heads,
            "full_ffn": config.intermediate_size,
            "parameters": parameter_count(model), "full_parameters": full_parameters,
            "macs_at_max_seq_length": route_macs(config, route, length),
            "full_macs_at_max_seq_length": route_macs(config, Route.uniform(config), length),
            "dev_mean_macs": mean_macs(config, width, depth, lengths),
            "dev_full_mean_macs": mean_macs(config, 1.0, 1.0, lengths),
            "source_model": os.path.abspath(args.model_dir), "versions": package_versions(),
        }
        write_manifest(tmp, manifest)  # the Predictor reads it
        manifest.update(check_runtimes(args, tmp, task, batches, expected, labels, tag))
        write_manifest(tmp, manifest)
        target = os.path.join(args.output_dir, tag)
        if args.quantize == "int8":  # checked before either folder is moved into place
            with staging(args.output_dir, int8_tag(tag)) as int8_tmp:
                quantized = export_int8(job, tmp, int8_tmp, manifest, expected)
                replace_dir(tmp, target)
                replace_dir(int8_tmp, os.path.join(args.output_dir, quantized["tag"]))
        else:
            replace_dir(tmp, target)  # an earlier export of it (--overwrite_output_dir) goes only now
    logger.info(f"exported {tag} to {target}: {manifest['parameters'] / full_parameters:.0%} of the parameters, "
                f"{manifest['macs_at_max_seq_length'] / manifest['full_macs_at_max_seq_length']:.0%} of the MACs at "
                f"length {length}; max |Δlogits| {manifest['check']['max_abs_logit_diff']:.1e} against the flexible "
                f"model on {len(expected)} dev examples")
    if args.quantize != "int8":
        return [manifest]
    log_int8(args.output_dir, task, quantized, "INT8", "float subnet")
    return [manifest, quantized]


def log_int8(output_dir: str, task, quantized: dict[str, Any], what: str, float_name: str, kept: str = "") -> None:
    """The one line an INT8 export's check ends with: its dev metric against the float form's, what it kept."""
    q = quantized["check"]
    logger.info(f"exported {quantized['tag']} to {os.path.join(output_dir, quantized['tag'])}: {what} on onnxruntime, "
                f"dev {task.primary_metric} {q['int8_metric']:.4f} against the {float_name}'s {q['float_metric']:.4f}; "
                f"{kept}{q['same_predictions']:.1%} of dev predictions the same")


def export_int8(job: ExportJob, float_dir: str, int8_dir: str, manifest: dict[str, Any],
                expected: np.ndarray) -> dict[str, Any]:
    """The INT8 form of a checked float export, into ``int8_dir``: the quantized model.onnx, the tokenizer and a
    manifest recording the quantization and its check -- the primary dev metric against the float subnet's
    on onnxruntime, refused beyond ``--quant_tolerance`` points -- and, in ``onnx`` as for a float export,
    its logit difference from the flexible model (it has no Paddle graph, so no Paddle checks)."""
    args = job.args
    tag = int8_tag(manifest["tag"])
    record = quantize_onnx(os.path.join(float_dir, ONNX_FILE), os.path.join(int8_dir, ONNX_FILE), args.verbose)
    job.tokenizer.save_pretrained(int8_dir)
    quantized = {**{k: v for k, v in manifest.items() if k not in ("check", "onnx", "dev_metrics")},
                 "tag": tag, "format": ONNX_FILE, "runtime": "onnx", "quantization": record}
    write_manifest(int8_dir, quantized)  # the Predictor reads it
    threads = math_threads(args.num_threads)
    float_logits = runtime_logits(float_dir, job.batches, threads, "onnx")
    int8_logits = runtime_logits(int8_dir, job.batches, threads, "onnx")
    quantized["check"], quantized["dev_metrics"] = int8_verdict(job, tag, float_logits, int8_logits,
                                                                ("model", "float subnet"))
    quantized["onnx"] = {"file": ONNX_FILE, "max_abs_logit_diff": float(np.abs(int8_logits - expected).max()),
                         "same_predictions": same_predictions(int8_logits, expected, job.task)}  # as a float export's
    write_manifest(int8_dir, quantized)
    return quantized


def int8_verdict(job: ExportJob, tag: str, float_logits: np.ndarray, int8_logits: np.ndarray,
                 names: tuple[str, str]) -> tuple[dict[str, Any], dict[str, float]]:
    """(check, INT8 dev metrics) of an INT8 export against its float form, both on onnxruntime; a one-line
    refusal naming both figures when it loses more than --quant_tolerance points of the primary metric
    (``names``: what the INT8 and the float exports are called in it)."""
    args, task = job.args, job.task
    metric = task.primary_metric
    float_metric = compute_metrics(task, float_logits, job.labels)[metric]
    int8_metrics = compute_metrics(task, int8_logits, job.labels)
    drop = 100.0 * (float_metric - int8_metrics[metric])
    if drop > args.quant_tolerance:
        raise UserError(f"export {tag}: the INT8 {names[0]}'s dev {metric} {int8_metrics[metric]:.4f} is {drop:.2f} "
                        f"points below the {names[1]}'s {float_metric:.4f} (--quant_tolerance "
                        f"{args.quant_tolerance:g}); nothing was written")
    return {"split": task.dev_splits[0], "examples": int(len(int8_logits)), "runtime": "onnxruntime",
            "metric": metric, "float_metric": float_metric, "int8_metric": int8_metrics[metric],
            "points_lost": drop, "quant_tolerance": args.quant_tolerance,
            "same_predictions": same_predictions(int8_logits, float_logits, task)}, int8_metrics


def export_dynamic(job: ExportJob, setting: dict[str, Any]) -> list[dict[str, Any]]:
    """A gated or early-exit setting into ``OUT/<mode>``, checked like a static export, routes included
    (with --quantize int8 also ``OUT/<mode>_int8``, :func:`export_int8_segments`).

    ``--dynamic_graphs segments`` (the default): the embeddings' graph and one per (segment, width), the
    gates and exit heads inside them (``deploy.segments``); ``layers``: a graph per (layer, width) and
    the backbone's other weights, gates and off-ramps, which the dynamic predictor runs in dygraph."""
    from ofa_flexbert.adaptive.runner import DynamicModel, depth_rule_for

    args, task, tokenizer, pooling, rule = job.args, job.task, job.tokenizer, job.pooling, job.rule
    batches, labels, lengths, text_pair = job.batches, job.labels, job.lengths, job.text_pair

    tag = setting["mode"]
    plan = Plan.from_entry(setting)

    def fresh():
        return fresh_model(args, task, pooling)

    model = fresh()
    gates, ramps = decision_modules(args.model_dir, plan, f"--inference_config ({tag})",
                                    f"--inference_config ({tag})")
    reference = DynamicModel(model, gates, ramps, plan, depth_rule_for(args.model_dir, plan))
    expected, routes = run_dynamic(reference, batches)
    config = model.bert.config
    segmented = args.dynamic_graphs == "segments"
    with staging(args.output_dir, tag) as tmp, staging(args.output_dir, int8_tag(tag)) as int8_tmp:
        with quiet_native(args.verbose):
            if segmented:
                graphs, layer_parameters, layout = write_segments(fresh, plan, reference, tmp, args.format == "onnx")
            else:
                graphs, layer_parameters, layout = write_layers(fresh, model, plan, gates, ramps, tmp)
        tokenizer.save_pretrained(tmp)
        outside = sum(parameter_count(layer) for layer in (gates, ramps) if layer is not None) + \
            parameter_count(model) - sum(parameter_count(layer) for layer in model.bert.encoder.layers)
        manifest: dict[str, Any] = {
            "kind": "segments" if segmented else "dynamic", "tag": tag, "task": task.name,
            "num_labels": task.num_labels, "labels": list(task.labels or []), "text_pair": text_pair,
            "max_seq_length": args.max_seq_length, "pooling": pooling,
            "format": f"{graphs} {'segment' if segmented else 'layer'} graphs"
                      + (" (and ONNX)" if layout.get("onnx_opset") else ""), "setting": setting, "depth_rule": rule,
            "hidden_size": config.hidden_size, "full_layers": config.num_hidden_layers,
            "parameters": outside + layer_parameters, "parameters_outside_layers": outside,
            "full_parameters": parameter_count(model), **layout,
            "dev_mean_macs": float(np.mean([reference.macs(r, t) for r, t in zip(routes, lengths)])),
            "dev_full_mean_macs": mean_macs(config, 1.0, 1.0, lengths),
            "source_model": os.path.abspath(args.model_dir), "versions": package_versions(),
        }
        write_manifest(tmp, manifest)  # the predictor reads it
        check, deployed = check_dynamic(args, tmp, manifest, task, batches, expected, routes)
        manifest["check"] = check
        manifest["dev_metrics"] = compute_metrics(task, deployed, labels)
        write_manifest(tmp, manifest)
        quantized = export_int8_segments(job, tmp, int8_tmp, manifest, lengths) if args.quantize == "int8" else None
        replace_dir(tmp, os.path.join(args.output_dir, tag))
        if quantized is not None:
            replace_dir(int8_tmp, os.path.join(args.output_dir, quantized["tag"]))
    logger.info(f"exported {tag} to {os.path.join(args.output_dir, tag)}: {manifest['format']}; "
                f"{check['same_routes']:.1%} of dev routes and max |Δlogits| {check['max_abs_logit_diff']:.1e} "
                "against the flexible model")
    if quantized is None:
        return [manifest]
    log_int8(args.output_dir, task, quantized, "INT8 segment graphs", "float export",
             f"{quantized['check']['same_routes']:.1%} of dev routes and ")
    return [manifest, quantized]


def export_int8_segments(job: ExportJob, float_dir: str, int8_dir: str, manifest: dict[str, Any],
                         lengths: list[int]) -> dict[str, Any]:
    """The INT8 form of a checked segment export, into ``int8_dir``: every segment graph's ONNX model
    quantized (``deploy.quantize.quantize_folder``), the tokenizer, and the float manifest for onnxruntime.

    Checked as an INT8 cascade is: the dev metric against the float export's on onnxruntime, refused
    beyond --quant_tolerance; INT8 gate and off-ramp logits can move a decision, so the share of dev
    routes that are the float export's is recorded, and the mean MACs are the INT8 routes' own."""
    args = job.args
    tag = int8_tag(manifest["tag"])
    record = quantize_folder(os.path.join(float_dir, SEGMENTS), os.path.join(int8_dir, SEGMENTS), args.verbose)
    job.tokenizer.save_pretrained(int8_dir)
    quantized = {**{k: v for k, v in manifest.items() if k not in ("check", "dev_metrics")}, "tag": tag,
                 "runtime": "onnx", "format": manifest["format"].replace(" (and ONNX)", "") + " (ONNX, INT8)",
                 "quantization": record}
    write_manifest(int8_dir, quantized)  # the predictor reads it
    threads = math_threads(args.num_threads)

    def run(folder: str, record: dict[str, Any]):
        runner = routed_predictor(folder, record, threads, True, "onnx")
        parts = [runner.run(ids, types) for ids, types in job.batches]
        return np.concatenate([p[0] for p in parts]), [r for p in parts for r in p[1]], runner

    float_logits, float_routes, _ = run(float_dir, manifest)
    int8_logits, int8_routes, runner = run(int8_dir, quantized)
    check, quantized["dev_metrics"] = int8_verdict(job, tag, float_logits, int8_logits, ("export", "float export"))
    quantized["check"] = {**check, "same_routes": float(np.mean([a == b for a, b in zip(int8_routes, float_routes)]))}
    quantized["dev_mean_macs"] = float(np.mean([runner.macs(r, t) for r, t in zip(int8_routes, lengths)]))
    write_manifest(int8_dir, quantized)
    return quantized


def write_layers(fresh, model, plan: Plan, gates, ramps, export_dir: str) -> tuple[int, int, dict[str, Any]]:
    """The per-layer form: a graph per (layer, width), the backbone's other weights, gates, off-ramps."""
    from gate.io import save_gates, save_off_ramps

    from ofa_flexbert.deploy.graphs import save_backbone, save_layers

    graphs, parameters = save_layers(fresh, plan, export_dir)
    save_backbone(model, export_dir)
    for saved, save in ((gates, save_gates), (ramps, save_off_ramps)):
        if saved is not None:
            save(saved, export_dir)
    return graphs, parameters, {}


def write_segments(fresh, plan: Plan, reference, export_dir: str, onnx: bool) -> tuple[int, int, dict[str, Any]]:
    """The segment form: the route cut at its decisions (``deploy.segments.cut_route``), a graph per
    (segment, width) with the deciding heads inside, each also as ONNX when ``onnx``; returns the
    manifest's description of it (what the segment predictor reads: the segments, the start route,
    class widths, gate settings, off-ramps; ``onnx_opset`` when it has an ONNX form)."""
    from ofa_flexbert.deploy.graphs import save_segments
    from ofa_flexbert.deploy.segments import plan_segments, segment_widths
    from ofa_flexbert.engine.routes import config_width

    gates = reference.gates if plan.gated else None
    ramps = reference.ramps if plan.exits else None
    route, config = reference.route, reference.config
    segments = plan_segments(route.layers, gates is not None, ramps is not None,
                             gates.settings.gate_steps() if gates is not None else (),
                             ramps.layers if ramps is not None else ())
    start = route.widths[0]
    multipliers = segment_widths(plan.widths, plan.fixed_gate or plan.widths[0], plan.gated)
    graphs, parameters = save_segments(fresh, segments, multipliers, gates, ramps, export_dir)
    for prefix in graphs if onnx else ():
        save_onnx(export_dir, prefix)
    widths = [config_width(config, w) for w in plan.widths] if plan.gated else [start]
    return len(graphs), parameters, {
        **({"onnx_opset": ONNX_OPSET} if onnx else {}), "segments": [s.to_json() for s in segments], "route": route_description(route),
        "class_widths": [{"heads": w.heads, "head_dim": w.head_dim, "ffn": w.ffn} for w in widths],
        "gate_settings": gates.settings.to_json() if gates is not None else None,
        "off_ramps": list(ramps.layers) if ramps is not None else None,
        "pad_token_id": int(reference.model.bert.pad_token_id)}


def check_dynamic(args: RunArgs, export_dir: str, manifest: dict[str, Any], task, batches: list,
                  expected: np.ndarray, routes: list) -> tuple[dict[str, Any], np.ndarray]:
    """The manifest's ``check`` of a dynamic export and its deployed (oneDNN) logits: on each kernel set
    (and onnxruntime, for a segment export with --format onnx), the share of dev routes that are the
    flexible model's and the logit difference where they are."""
    threads = math_threads(args.num_threads)
    check: dict[str, Any] = {"split": task.dev_splits[0], "examples": int(len(expected)), "runtime": "paddle_inference"}
    runs_on = [("paddle", False), ("paddle", True)] + ([("onnx", None)] if manifest.get("onnx_opset") else [])
    deployed = None
    for runtime, onednn in runs_on:
        predictor = routed_predictor(export_dir, manifest, threads, bool(onednn), runtime)
        runs = [predictor.run(ids, types) for ids, types in batches]
        got, taken = np.concatenate([r[0] for r in runs]), [route for r in runs for route in r[1]]
        check.update(compare_routes(manifest["tag"], task, got, taken, expected, routes,
                                    "onnxruntime" if runtime == "onnx" else "oneDNN" if onednn else "reference kernels"))
        deployed = got if onednn else deployed
    return check, deployed


def routed_predictor(export_dir: str, manifest: dict[str, Any], threads: int, onednn: bool, runtime: str = "paddle"):
    """The runner of a dynamic export's routes, by its manifest's kind."""
    if manifest["kind"] == "segments":
        from ofa_flexbert.deploy.segment_predictor import SegmentPredictor

        return SegmentPredictor(export_dir, manifest, threads, onednn, runtime)
    from ofa_flexbert.deploy.dynamic_predictor import DynamicPredictor

    return DynamicPredictor(export_dir, manifest, threads, onednn)


ROUTE_CHECKS = {"reference kernels": ("", TOLERANCE, "on Paddle Inference"),
                "oneDNN": ("onednn_", KERNEL_TOLERANCE, "on Paddle Inference with oneDNN"),
                "onnxruntime": ("onnx_", KERNEL_TOLERANCE, "on onnxruntime")}  # key prefix, tolerance, where


def compare_routes(tag: str, task, got: np.ndarray, taken: list, expected: np.ndarray, routes: list,
                   kernels: str) -> dict[str, Any]:
    """One runtime's part of a routed export's check: the share of dev routes that are the flexible
    model's, the logit difference where they are, the predictions; a one-line refusal beyond
    :data:`ROUTE_AGREEMENT` or the kernels' tolerance (:data:`ROUTE_CHECKS`)."""
    key, tolerance, where = ROUTE_CHECKS[kernels]
    same = np.array([a == b for a, b in zip(taken, routes)])
    diff = float(np.abs(got - expected)[same].max()) if same.any() else float("inf")
    if not diff <= tolerance or same.mean() < ROUTE_AGREEMENT:
        raise UserError(f"export {tag}: {where} {same.mean():.1%} of the routes are the flexible model's and the "
                        f"logits differ by {diff:.2e}; nothing was written")
    return {f"{key}max_abs_logit_diff": diff, f"{key}same_routes": float(same.mean()),
            f"{key}same_predictions": same_predictions(got, expected, task)}


def export_cascade(job: ExportJob, setting: dict[str, Any]) -> list[dict[str, Any]]:
    """A confidence cascade into ``OUT/cascade``: each stage an ordinary static export (checked as one) in a
    subfolder, and a manifest naming them with the thresholds; the whole checked against
    ``--stage infer --cascade`` on dev (which stage answered each input, and its logits) before it
    is moved into place.  With --quantize int8 also ``OUT/cascade_int8``, the same cascade of the
    stages' INT8 exports (:func:`export_int8_cascade`); neither folder is moved into place unless both pass."""
    from ofa_flexbert.adaptive.runner import DynamicModel
    from ofa_flexbert.deploy.cascade_predictor import CascadePredictor

    args, task, tag = job.args, job.task, Mode.CASCADE.value
    plan = Plan.from_entry(setting)
    model = fresh_model(args, task, job.pooling)
    reference = DynamicModel(model, None, None, plan, job.rule)
    expected, runs = run_dynamic(reference, job.batches)
    config = model.bert.config
    with staging(args.output_dir, tag) as tmp, staging(args.output_dir, int8_tag(tag)) as int8_tmp:
        inner = dataclasses.replace(job, args=dataclasses.replace(args, output_dir=tmp))
        exported = [export_one(inner, w, d) for w, d in plan.stages]
        members = [e[0] for e in exported]
        job.tokenizer.save_pretrained(tmp)  # what the Predictor tokenises with
        manifest: dict[str, Any] = {
            "kind": "cascade", "tag": tag, "task": task.name, "num_labels": task.num_labels,
            "labels": list(task.labels or []), "text_pair": job.text_pair, "max_seq_length": args.max_seq_length,
            "pooling": job.pooling, "format": f"{len(members)} static subnets", "setting": plan.to_entry(),
            "stages": [m["tag"] for m in members], "depth_rule": job.rule, "hidden_size": config.hidden_size,
            "parameters": sum(m["parameters"] for m in members), "full_parameters": members[0]["full_parameters"],
            "dev_mean_macs": float(np.mean([reference.macs(r, t) for r, t in zip(runs, job.lengths)])),
            "dev_full_mean_macs": mean_macs(config, 1.0, 1.0, job.lengths),
            "source_model": os.path.abspath(args.model_dir), "versions": package_versions(),
        }
        write_manifest(tmp, manifest)  # the predictor reads it
        threads = math_threads(args.num_threads)
        check: dict[str, Any] = {"split": task.dev_splits[0], "examples": int(len(expected)), "runtime": "paddle_inference"}
        kernels = [("reference kernels", "paddle", False), ("oneDNN", "paddle", True)]
        kernels += [("onnxruntime", "onnx", True)] if args.format == "onnx" else []
        for name, runtime, onednn in kernels:
            cascade = CascadePredictor(tmp, manifest, threads, onednn, runtime, job.tokenizer.pad_token_id)
            parts = [cascade.run(ids, types) for ids, types in job.batches]
            got = np.concatenate([p[0] for p in parts])
            check.update(compare_routes(tag, task, got, [r for p in parts for r in p[1]], expected, runs, name))
            if name == "oneDNN":
                manifest["dev_metrics"] = compute_metrics(task, got, job.labels)
        manifest["check"] = check
        write_manifest(tmp, manifest)
        quantized = None
        if args.quantize == "int8":  # the stages' INT8 exports move from the float cascade's folder to their own
            for stage_int8 in (e[1] for e in exported):
                os.rename(os.path.join(tmp, stage_int8["tag"]), os.path.join(int8_tmp, stage_int8["tag"]))
            quantized = export_int8_cascade(job, tmp, int8_tmp, manifest, [e[1] for e in exported])
        replace_dir(tmp, os.path.join(args.output_dir, tag))
        if quantized is not None:
            replace_dir(int8_tmp, os.path.join(args.output_dir, quantized["tag"]))
    logger.info(f"exported {tag} to {os.path.join(args.output_dir, tag)}: {len(members)} static subnets; "
                f"{check['onednn_same_routes']:.1%} of dev inputs answered by the same stage as the flexible model, "
                f"max |Δlogits| {check['onednn_max_abs_logit_diff']:.1e} there")
    if quantized is None:
        return [manifest]
    log_int8(args.output_dir, task, quantized, "INT8 stages", "float cascade",
             f"{quantized['check']['same_stage']:.1%} of dev inputs answered by the same stage and ")
    return [manifest, quantized]


def export_int8_cascade(job: ExportJob, float_dir: str, int8_dir: str, manifest: dict[str, Any],
                        stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The INT8 form of a checked float cascade, into ``int8_dir`` (which holds the stages' INT8 exports,
    each checked on its own): the float cascade's manifest naming them, for onnxruntime only.

    Checked as a static INT8 export is, on the whole cascade: its dev metric against the float cascade's
    on onnxruntime, refused beyond --quant_tolerance points.  INT8 logits move the entropies, so some
    inputs stop at another stage than in float: the share answered by the same stage is recorded, and
    the mean MACs are the INT8 cascade's own."""
    from ofa_flexbert.deploy.cascade_predictor import CascadePredictor

    args = job.args
    tag = int8_tag(manifest["tag"])
    job.tokenizer.save_pretrained(int8_dir)
    quantized = {**{k: v for k, v in manifest.items() if k not in ("check", "dev_metrics")}, "tag": tag,
                 "stages": [m["tag"] for m in stages], "runtime": "onnx",
                 "quantization": combined([m["quantization"] for m in stages], len(stages))}
    write_manifest(int8_dir, quantized)  # the predictor reads it
    threads = math_threads(args.num_threads)
    pad = job.tokenizer.pad_token_id

    def run_cascade(folder: str, record: dict[str, Any]) -> tuple[np.ndarray, list, Any]:
        cascade = CascadePredictor(folder, record, threads, True, "onnx", pad)
        parts = [cascade.run(ids, types) for ids, types in job.batches]
        return np.concatenate([p[0] for p in parts]), [r for p in parts for r in p[1]], cascade

    float_logits, float_runs, _ = run_cascade(float_dir, manifest)
    int8_logits, int8_runs, int8_cascade = run_cascade(int8_dir, quantized)
    check, quantized["dev_metrics"] = int8_verdict(job, tag, float_logits, int8_logits, ("cascade", "float cascade"))
    quantized["check"] = {**check, "same_stage": float(np.mean([len(a.routes) == len(b.routes)
                                                                for a, b in zip(int8_runs, float_runs)]))}
    quantized["dev_mean_macs"] = float(np.mean([int8_cascade.macs(r, t) for r, t in zip(int8_runs, job.lengths)]))
    write_manifest(int8_dir, quantized)
    return quantized


def fresh_model(args: RunArgs, task, pooling: str):
    """A fresh load of --model_dir in eval mode with its pooling: every export narrows a model of its own."""
    return evaluation_model(args.model_dir, task, pooling)


def run_dynamic(runner, batches: list) -> tuple[np.ndarray, list]:
    """Logits and routes of a ``adaptive.runner.DynamicModel`` over (ids, token types) batches."""
    logits, routes = [], []
    for ids, types in batches:
        batch_logits, batch_routes = runner.run({"input_ids": paddle.to_tensor(ids),
                                                 "token_type_ids": paddle.to_tensor(types)})
        logits.append(batch_logits)
        routes.extend(batch_routes)
    return np.concatenate(logits), routes


def check_runtimes(args: RunArgs, export_dir: str, task, batches: list, expected: np.ndarray, labels: np.ndarray,
                   tag: str) -> dict[str, Any]:
    """The manifest's ``check``, ``onnx`` and ``dev_metrics``: the exported model on every runtime against
    the flexible model's logits ``expected``; a one-line error when one differs beyond its tolerance."""
    threads = math_threads(args.num_threads)
    plain = runtime_logits(export_dir, batches, threads, "paddle", onednn=False)
    diff = float(np.abs(plain - expected).max())
    if not diff <= TOLERANCE:
        raise UserError(f"export {tag}: the exported model's logits differ from the flexible model's by "
                        f"{diff:.2e} on {task.name} dev (> {TOLERANCE:g}); nothing was written")
    deployed = runtime_logits(export_dir, batches, threads, "paddle", onednn=True)
    result: dict[str, Any] = {
        "check": {"split": task.dev_splits[0], "examples": int(len(expected)), "max_abs_logit_diff": diff,
                  "runtime": "paddle_inference", "onednn": False,
                  "onednn_max_abs_logit_diff": kernel_check(deployed, expected, "Paddle Inference with oneDNN", tag),
                  "onednn_same_predictions": same_predictions(deployed, expected, task)},
        "dev_metrics": compute_metrics(task, deployed, labels),
    }
    if args.format == "onnx":
        with quiet_native(args.verbose):
            path = save_onnx(export_dir)
        onnx = runtime_logits(export_dir, batches, threads, "onnx")
        result["onnx"] = {"file": os.path.basename(path), "opset": ONNX_OPSET,
                          "max_abs_logit_diff": kernel_check(onnx, expected, "onnxruntime", tag),
                          "same_predictions": same_predictions(onnx, expected, task), "versions": onnx_versions()}
    return result


def runtime_logits(export_dir: str, batches: list, threads: int, runtime: str, onednn: bool = True) -> np.ndarray:
    """The exported model's logits on ``batches`` under one runtime (a fresh Predictor)."""
    predictor = Predictor(export_dir, num_threads=threads, onednn=onednn, runtime=runtime)
    return np.concatenate([predictor.logits(ids, types) for ids, types in batches])


def kernel_check(got: np.ndarray, expected: np.ndarray, runtime: str, tag: str) -> float:
    """Max |Δlogits| of a runtime with kernels of its own (oneDNN, onnxruntime); refused above :data:`KERNEL_TOLERANCE`."""
    diff = float(np.abs(got - expected).max())
    if not diff <= KERNEL_TOLERANCE:
        raise UserError(f"export {tag}: {runtime}'s logits differ from the flexible model's by {diff:.2e} "
                        f"(> {KERNEL_TOLERANCE:g}); nothing was written")
    return diff


def same_predictions(got: np.ndarray, expected: np.ndarray, task) -> Optional[float]:
    """Share of inputs whose predicted class is the flexible model's (None for regression)."""
    if task.is_regression:
        return None
    return float((got.argmax(axis=1) == expected.argmax(axis=1)).mean())


def onnx_versions() -> dict[str, str]:
    import onnxruntime
    import paddle2onnx

    return {"paddle2onnx": getattr(paddle2onnx, "__version__", "?"), "onnxruntime": onnxruntime.__version__}


def run(args: RunArgs) -> StageReport:
    """``--stage export``: each requested subnet into ``<output_dir>/<tag>/``; export_results.json lists them."""
    task, tokenizer = start(args)
    args = quantize_as_chosen(args, task.name)
    setting = dynamic_setting(args, task.name)
    if args.quantize == "int8":
        if setting is not None and setting["mode"] != Mode.CASCADE and args.dynamic_graphs != "segments":
            raise UserError(f"--quantize int8: a {setting['mode']} export of per-layer graphs (--dynamic_graphs "
                            "layers) has no ONNX form to quantize; segment graphs have one")
        args = dataclasses.replace(args, format="onnx")  # the INT8 model is the float ONNX model quantized
    subnets = [] if setting else requested_subnets(args, task.name)
    tags = [setting["mode"]] if setting else [subnet_tag(w, d) for w, d in subnets]
    check_targets(args, tags + ([int8_tag(t) for t in tags] if args.quantize == "int8" else []))
    pooling = check_pooling(args)
    rule = recorded_depth_rule(args.model_dir) or "prefix"
    started = time.time()
    dev = dev_data(args, task, tokenizer)
    job = ExportJob(args, task, tokenizer, pooling, rule, id_batches(dev.loader),
                    np.array([row["labels"] for row in dev.dataset]), sequence_lengths(dev.loader), dev.pairs)
    if setting is None:
        exports = [m for w, d in subnets for m in export_one(job, w, d)]
    else:
        exports = (export_cascade if setting["mode"] == Mode.CASCADE else export_dynamic)(job, setting)
    rows = [{"tag": m["tag"], "path": os.path.join(args.output_dir, m["tag"]),
             "width_mult": m.get("width_mult"), "depth_mult": m.get("depth_mult"),
             "parameters": m["parameters"], "parameter_share": m["parameters"] / m["full_parameters"],
             "macs_share": m["dev_mean_macs"] / m["dev_full_mean_macs"] if setting else
             m["macs_at_max_seq_length"] / m["full_macs_at_max_seq_length"],
             "metric": task.primary_metric, "value": m["dev_metrics"][task.primary_metric],
             "max_abs_logit_diff": m["check"].get("max_abs_logit_diff"), "format": m["format"],
             "onednn_max_abs_logit_diff": m["check"].get("onednn_max_abs_logit_diff"),
             "quantization": m.get("quantization", {}).get("mode"),
             "onnx_max_abs_logit_diff": m["onnx"]["max_abs_logit_diff"] if "onnx" in m
             else m["check"].get("onnx_max_abs_logit_diff")}
            for m in exports]
    seconds = round(time.time() - started, 1)
    write_export_results(args.output_dir, {"task": task.name, "source_model": os.path.abspath(args.model_dir),
                                           "manifest": MANIFEST, "exports": rows, "seconds": seconds})
    write_run_info(args, task.name, {"complete": True, "exports": [r["tag"] for r in rows]})
    return StageReport("export", task.name, args.output_dir, task.primary_metric, seconds=seconds, exports=rows)
