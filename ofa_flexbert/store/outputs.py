"""The files every stage leaves in --output_dir, written atomically.

The contract (later stages, reports and checks read these):

* the model: ``config.json``, ``model_state.pdparams``, tokenizer files (``models.save_model``);
* ``flexbert.json``: stage, task, arguments, source model, package versions;
* ``eval_results.json``: ``{"task", "stage", "metric", "subnets": [{"width_mult",
  "depth_mult", "metrics", "macs", "single_class"}], "best_step"}`` for the saved model
  (``macs``: analytic multiply-accumulates per dev example, accounting.py; ``single_class``:
  the subnet predicted one class for every dev example -- classification only);
* ``checkpoint/``: the resume state of an unfinished training run (``train/checkpoint.py``);
* ``infer_results.json`` and ``predictions.jsonl`` (``--stage infer``: the summary, one row per input);
* ``search_results.json``, ``inference_config.json`` (the chosen setting), ``pareto.png`` (``--stage search``);
* ``cost_table.json`` (``--stage profile``: the fitted latency probes, ``adaptive/latency.py``);
* ``export_results.json`` and one folder per subnet (``--stage export``; its contract: ``deploy/layout.py``);
* ``vdl/<stage>/``: VisualDL logs.

Every file is written atomically (``atomic.py``), so a reader (or a crash) never sees half a file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Optional

from .atomic import write_json, write_text
from .models import WEIGHT_FILES
from ofa_flexbert.config import RunArgs, to_dict
from ofa_flexbert.errors import UserError

WEIGHTS_FILE = WEIGHT_FILES[0]  # what save_model writes
RUN_INFO = "flexbert.json"
EVAL_RESULTS = "eval_results.json"
CHECKPOINT = "checkpoint"
INFER_RESULTS, PREDICTIONS = "infer_results.json", "predictions.jsonl"
SEARCH_RESULTS, INFERENCE_CONFIG, PARETO_PLOT = "search_results.json", "inference_config.json", "pareto.png"
EXPORT_RESULTS = "export_results.json"
COST_TABLE = "cost_table.json"  # --stage profile (adaptive/latency.py)
# What a finished or interrupted run leaves in its --output_dir: a new run refuses to start over any of them
# (unless --overwrite_output_dir or --resume).
RUN_FILES = (WEIGHTS_FILE, CHECKPOINT, EVAL_RESULTS, INFER_RESULTS, SEARCH_RESULTS, EXPORT_RESULTS, COST_TABLE, RUN_INFO)

PACKAGES = ("paddlepaddle", "paddlepaddle-gpu", "paddleslim", "paddlenlp", "visualdl", "numpy")


def package_versions() -> dict[str, str]:
    """Installed versions of the stack, for reproducibility records."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class SubnetResult:
    """Dev metrics of one subnet (width and depth multipliers) and its cost.

    ``macs`` is the analytic multiply-accumulate count per dev example (accounting.py), at
    the dev examples' own token counts.  ``single_class`` (classification only) is true when
    the subnet predicted the same class for every dev example: a collapsed subnet, whose
    metric is the majority-class rate and not a trade-off point.
    """

    width_mult: float
    depth_mult: float
    metrics: dict[str, float] = field(default_factory=dict)
    macs: Optional[float] = None
    single_class: Optional[bool] = None

    def to_json(self) -> dict[str, Any]:
        out = {"width_mult": self.width_mult, "depth_mult": self.depth_mult, "metrics": self.metrics}
        if self.macs is not None:
            out["macs"] = self.macs
        if self.single_class is not None:
            out["single_class"] = self.single_class
        return out


def write_eval_results(output_dir: str, task: str, stage: str, metric: str, subnets: list[SubnetResult],
                       best_step: Optional[int], extra: Optional[dict[str, Any]] = None) -> None:
    """eval_results.json: the saved model's metrics and MACs per subnet (format in the module docstring),
    plus a stage's own keys (``extra``; the gate stage's ``gates``)."""
    write_json(
        os.path.join(output_dir, EVAL_RESULTS),
        {"task": task, "stage": stage, "metric": metric, "subnets": [s.to_json() for s in subnets],
         "best_step": best_step, **(extra or {})},
    )


def read_eval_results(output_dir: str) -> Optional[dict[str, Any]]:
    """The eval_results.json in ``output_dir``, None if there is none; UserError if it is not ours."""
    path = os.path.join(output_dir, EVAL_RESULTS)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            results = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(results, dict) or not isinstance(results.get("subnets"), list):
        raise UserError(f"{path}: expected an object with a 'subnets' list (as the stages write)")
    return results


def write_run_info(args: RunArgs, task: str, extra: dict[str, Any]) -> None:
    """flexbert.json in --output_dir: what produced the model beside it (stage, arguments, source, versions).

    ``extra`` always says whether the run is ``complete``: a model saved mid-run is described too, so an
    interrupted run never leaves an older run's description beside its model.
    """
    source = args.model_dir and os.path.abspath(args.model_dir)
    info = {"stage": args.stage, "task": task, "source_model": source, "arguments": to_dict(args),
            "versions": package_versions(), **extra}
    write_json(os.path.join(args.output_dir, RUN_INFO), info)


def read_run_info(model_dir: str) -> Optional[dict[str, Any]]:
    """The flexbert.json beside a model, None if there is none or it is not one this toolkit wrote
    (a model from elsewhere is described by nothing, never an error)."""
    try:
        with open(os.path.join(model_dir, RUN_INFO), encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("arguments"), dict) else None


def recorded_depth_rule(model_dir: str) -> Optional[str]:
    """The --depth_rule the model's depth training used, None if it had none.

    The depth and final stages record it in flexbert.json, and every later stage (gate) copies it
    from its input, so it follows the weights: a static depth-d subnet and early exit both need it.
    """
    info = read_run_info(model_dir)
    rule = info.get("depth_rule") if info else None
    return rule if isinstance(rule, str) else None


def write_infer_results(output_dir: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``--stage infer``: predictions.jsonl (one JSON object per input) and infer_results.json (the summary)."""
    os.makedirs(output_dir, exist_ok=True)
    write_text(os.path.join(output_dir, PREDICTIONS), "\n".join(json.dumps(row) for row in rows) + "\n")
    write_json(os.path.join(output_dir, INFER_RESULTS), summary)


def write_search_results(output_dir: str, summary: dict[str, Any], chosen: Optional[dict[str, Any]]) -> None:
    """``--stage search``: inference_config.json when a setting was chosen (``{task: entry}``), then
    search_results.json."""
    os.makedirs(output_dir, exist_ok=True)
    if chosen is not None:
        write_json(os.path.join(output_dir, INFERENCE_CONFIG), chosen)
    write_json(os.path.join(output_dir, SEARCH_RESULTS), summary)


def write_export_results(output_dir: str, results: dict[str, Any]) -> None:
    """``--stage export``: export_results.json beside the exported folders."""
    write_json(os.path.join(output_dir, EXPORT_RESULTS), results)
