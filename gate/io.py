"""Gates saved beside the model they route, and loaded with it.

``gates.json`` (the settings) and ``gates.pdparams`` (the weights) in the model directory.  A
model directory without them is an ordinary model and loads everywhere as before.
"""
from __future__ import annotations

import io
import json
import os
from typing import Optional

import paddle

from ofa_flexbert.errors import UserError
from ofa_flexbert.store.atomic import write_bytes, write_json

from .modules import Gates
from .ramps import OffRamps
from .settings import GateSettings

SETTINGS, WEIGHTS = "gates.json", "gates.pdparams"
RAMP_SETTINGS, RAMP_WEIGHTS = "off_ramps.json", "off_ramps.pdparams"


def _save_weights(layer: paddle.nn.Layer, path: str) -> None:
    buffer = io.BytesIO()
    paddle.save(layer.state_dict(), buffer)
    write_bytes(path, buffer.getvalue())


def save_gates(gates: Gates, model_dir: str, extra: Optional[dict] = None) -> None:
    """Weights first, then the settings that make them loadable (each written atomically)."""
    _save_weights(gates, os.path.join(model_dir, WEIGHTS))
    write_json(os.path.join(model_dir, SETTINGS), {**gates.settings.to_json(), "hidden_size": gates.hidden,
                                                          **(extra or {})})


def has_gates(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, SETTINGS))


def load_gates(model_dir: str, flag: str = "--model_dir") -> Optional[Gates]:
    """The gates saved in ``model_dir``, None when it has none; a one-line UserError if they are unreadable."""
    if not has_gates(model_dir):
        return None
    where = f"{flag} {model_dir}"
    try:
        with open(os.path.join(model_dir, SETTINGS), encoding="utf-8") as fh:
            data = json.load(fh)
        settings = GateSettings.from_json(data)
        gates = Gates(int(data["hidden_size"]), settings)
        state = paddle.load(os.path.join(model_dir, WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: cannot read its gates ({SETTINGS}, {WEIGHTS}): {str(exc).splitlines()[0]}") from None
    missing = set(gates.state_dict()) - set(state)
    if missing:
        raise UserError(f"{where}: {WEIGHTS} lacks {sorted(missing)[0]}")
    gates.set_state_dict(state)
    gates.record = {k: v for k, v in data.items() if k.startswith("gate_") or k == "class_weights"}
    return gates


def save_off_ramps(ramps: OffRamps, model_dir: str) -> None:
    """``off_ramps.pdparams`` then ``off_ramps.json`` (each atomically)."""
    _save_weights(ramps, os.path.join(model_dir, RAMP_WEIGHTS))
    write_json(os.path.join(model_dir, RAMP_SETTINGS),
                      {"layers": list(ramps.layers), "hidden_size": ramps.hidden, "num_labels": ramps.num_labels})


def load_off_ramps(model_dir: str, flag: str = "--model_dir") -> Optional[OffRamps]:
    """The off-ramps saved in ``model_dir``, None when it has none; a one-line UserError if unreadable."""
    if not os.path.isfile(os.path.join(model_dir, RAMP_SETTINGS)):
        return None
    try:
        with open(os.path.join(model_dir, RAMP_SETTINGS), encoding="utf-8") as fh:
            data = json.load(fh)
        ramps = OffRamps(int(data["hidden_size"]), int(data["num_labels"]), [int(x) for x in data["layers"]])
        state = paddle.load(os.path.join(model_dir, RAMP_WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{flag} {model_dir}: cannot read its off-ramps ({RAMP_SETTINGS}, {RAMP_WEIGHTS}): "
                        f"{str(exc).splitlines()[0]}") from None
    missing = set(ramps.state_dict()) - set(state)
    if missing:
        raise UserError(f"{flag} {model_dir}: {RAMP_WEIGHTS} lacks {sorted(missing)[0]}")
    ramps.set_state_dict(state)
    return ramps
