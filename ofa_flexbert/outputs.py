"""The files every stage leaves in --output_dir, written atomically.

The contract (later stages, reports and checks read these):

* the model: ``config.json``, ``model_state.pdparams``, tokenizer files (``models.save_model``);
* ``flexbert.json``: stage, task, arguments, source model, package versions;
* ``eval_results.json``: ``{"task", "stage", "metric", "subnets": [{"width_mult",
  "depth_mult", "metrics"}], "best_step"}`` for the saved model;
* ``vdl/<stage>/``: VisualDL logs.

Atomic means: write a temporary file in the same directory, flush it to disk, then
``os.replace`` it over the target, so a reader (or a crash) never sees half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Optional

PACKAGES = ("paddlepaddle", "paddlepaddle-gpu", "paddleslim", "paddlenlp", "visualdl", "numpy")


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (temporary file + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, data: Any) -> None:
    """JSON with sorted, indented keys; NaN is refused (strict JSON readers choke on it)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


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
    """Dev metrics of one subnet (width and depth multipliers)."""

    width_mult: float
    depth_mult: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"width_mult": self.width_mult, "depth_mult": self.depth_mult, "metrics": self.metrics}


def write_eval_results(output_dir: str, task: str, stage: str, metric: str, subnets: list[SubnetResult],
                       best_step: Optional[int]) -> None:
    atomic_write_json(
        os.path.join(output_dir, "eval_results.json"),
        {"task": task, "stage": stage, "metric": metric, "subnets": [s.to_json() for s in subnets],
         "best_step": best_step},
    )


def read_eval_results(output_dir: str) -> Optional[dict[str, Any]]:
    path = os.path.join(output_dir, "eval_results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_run_info(output_dir: str, stage: str, task: str, arguments: dict[str, Any], source_model: Optional[str],
                   extra: Optional[dict[str, Any]] = None) -> None:
    """flexbert.json: what produced the model in this directory."""
    info = {"stage": stage, "task": task, "source_model": source_model and os.path.abspath(source_model),
            "arguments": arguments, "versions": package_versions()}
    info.update(extra or {})
    atomic_write_json(os.path.join(output_dir, "flexbert.json"), info)
