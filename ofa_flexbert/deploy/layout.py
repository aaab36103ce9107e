"""What an export directory holds: the contract ``--stage export`` writes and the predictors read.

A static subnet's directory: the graph ``model.json`` (paddle >= 3, PIR) or ``model.pdmodel``
(paddle 2.6) with ``model.pdiparams``, ``model.onnx`` with ``--format onnx``, the tokenizer files
and ``manifest.json`` (:func:`read_manifest`).  A dynamic export adds ``layers/`` (one graph per
(encoder layer, width the setting can choose), named by :func:`layer_graph_name`), the backbone's
other weights and config, the gates and the off-ramps.  A segment export instead holds ``segments/``:
the embeddings' graph and one per (segment, width) (:func:`segment_graph_name`, ``deploy.segments``),
every gate and exit head inside them.  File names live here and nowhere else.
"""
from __future__ import annotations

import json
import os
from typing import Any

from ofa_flexbert.engine.routes import Route, Width, config_width
from ofa_flexbert.errors import UserError

MANIFEST = "manifest.json"


MODEL_PREFIX = "model"


GRAPH_FILES = ("model.json", "model.pdmodel")  # paddle >= 3 writes the first, paddle 2.6 the second


INPUT_NAMES = ("input_ids", "token_type_ids")


LAYER_INPUT_NAMES = ("hidden", "mask")


ONNX_FILE = "model.onnx"


def onnx_file(prefix: str = MODEL_PREFIX) -> str:
    """The ONNX file of the graph ``<prefix>.*`` (``model.onnx`` for a static subnet)."""
    return prefix + ".onnx"
BACKBONE_CONFIG, BACKBONE_WEIGHTS = "backbone_config.json", "backbone.pdparams"


LAYERS = "layers"  # the folder of the per-(layer, width) graphs
SEGMENTS = "segments"  # the folder of a segment export's graphs: the embeddings', one per (segment, width)
EMBEDDINGS_GRAPH = "embeddings"
SEGMENT_OUTPUTS = ("hidden", "gate", "ramp", "final")  # what a segment graph returns, in this order, when it has it


def layer_graph_name(index: int, width: Width) -> str:
    """``layer<i>_h<heads>``: the file prefix of encoder layer ``index`` at ``width`` in a dynamic export."""
    return f"layer{index}_h{width.heads}"


def segment_graph_name(index: int, width: Width) -> str:
    """``segment<j>_h<heads>``: the file prefix of segment ``index`` at ``width`` in a segment export."""
    return f"segment{index}_h{width.heads}"


def graph_file(directory: str, prefix: str = MODEL_PREFIX) -> str:
    """The static graph file ``<prefix>.json`` or ``<prefix>.pdmodel`` in an export directory."""
    for name in GRAPH_FILES:
        path = os.path.join(directory, prefix + name[len(MODEL_PREFIX):])
        if os.path.isfile(path):
            return path
    raise UserError(f"{directory}: no exported model (expected {' or '.join(GRAPH_FILES)}; "
                    "write one with --stage export)")


def layer_widths(config, plan) -> list[Width]:
    """The distinct widths a plan can run a layer at, narrowest first: its --width_mult_list, and full
    width for a gated plan (the route a gated input starts from)."""
    multipliers = list(plan.widths) + ([1.0] if plan.gated else [])
    return sorted({config_width(config, w) for w in multipliers}, key=lambda w: w.heads)


def route_description(route: Route) -> dict[str, Any]:
    """The manifest's shape of a route: original layer indices, heads and FFN neurons per layer."""
    return {"layers": list(route.layers), "heads": [w.heads for w in route.widths],
            "ffn": [w.ffn for w in route.widths], "head_dim": route.widths[0].head_dim}


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    """``manifest.json`` beside the exported model (atomically)."""
    from ofa_flexbert.store.atomic import write_json

    write_json(os.path.join(directory, MANIFEST), manifest)


def read_manifest(directory: str, flag: str = "--export_dir") -> dict[str, Any]:
    """The manifest of an export directory; a one-line error when it is missing or unreadable."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{flag} {directory}: no {MANIFEST} (not a directory written by --stage export)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{flag} {directory}: {MANIFEST} cannot be read ({exc})") from None
    for key in ("task", "num_labels", "max_seq_length", "format"):
        if key not in manifest:
            raise UserError(f"{flag} {directory}: {MANIFEST} lacks '{key}' (written by another version?)")
    return manifest
