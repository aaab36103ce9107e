"""The resume checkpoint: everything needed to continue a run exactly where it stopped.

``<output_dir>/checkpoint/`` holds the trained model's weights (under the names the stage
trains them, e.g. a supernet's), the optimizer with its learning-rate schedule, the random
number generators (python and numpy; paddle's is re-seeded, below), the data position (epoch and batch) and the
best-so-far bookkeeping.  The training loop writes it at every evaluation.

Paddle's generator is not saved but re-seeded from (run seed, step) right after every
checkpoint, in the interrupted and the resumed run alike (:func:`reseed`): paddle 2.6.2's
``GeneratorState`` loses the generator's state when pickled (``paddle.save`` too), so a
saved state restores a different dropout stream there.  Writing is
atomic as a whole: a complete new directory replaces the old one by renames, and a crash
between the renames leaves ``checkpoint.old`` for :func:`load` to use.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import paddle

from ofa_flexbert.train import distributed
from ofa_flexbert.store.atomic import replace_dir, staging
from ofa_flexbert.errors import UserError
from ofa_flexbert.store.outputs import CHECKPOINT as NAME


@dataclass
class LoopState:
    """Where the loop is: ``step`` optimizer steps done, ``batch`` batches into ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_score: Optional[float] = None
    best_step: Optional[int] = None
    best_results: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # what must not change across a resume


def path(output_dir: str) -> str:
    """The checkpoint folder of a run (``.old`` beside it while a new one is being written)."""
    return os.path.join(output_dir, NAME)


def exists(output_dir: str) -> bool:
    """True if ``output_dir`` holds a resumable checkpoint (the current one or the previous)."""
    return any(os.path.isfile(os.path.join(p, "state.json")) for p in (path(output_dir), path(output_dir) + ".old"))


def _rename_optimizer_state(state: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Re-key optimizer state (``<param name>_moment1_0`` ...) from one parameter naming to another.

    Paddle keys optimizer state by auto-generated parameter names (``linear_12.w_0``), which
    differ between two instances of the same model; the checkpoint uses the structured
    names (``bert.encoder.layers.0.linear1.fn.weight``) so any fresh instance can load it.
    """
    renamed = {}
    ordered = sorted(names, key=len, reverse=True)
    for key, value in state.items():
        prefix = next((old for old in ordered if key == old or key.startswith(old + "_")), None)
        renamed[key if prefix is None else names[prefix] + key[len(prefix):]] = value
    return renamed


def save(output_dir: str, model: paddle.nn.Layer, optimizer, state: LoopState) -> None:
    """Write the checkpoint; the previous one stays valid until the new one is complete."""
    with staging(output_dir, NAME) as tmp:
        paddle.save(model.state_dict(), os.path.join(tmp, "model.pdparams"))
        to_structured = {p.name: n for n, p in model.named_parameters()}
        paddle.save(_rename_optimizer_state(optimizer.state_dict(), to_structured),
                    os.path.join(tmp, "optimizer.pdopt"))
        with open(os.path.join(tmp, "rng.pkl"), "wb") as fh:
            pickle.dump({"python": random.getstate(), "numpy": np.random.get_state()}, fh)
        with open(os.path.join(tmp, "state.json"), "w") as fh:  # last: its presence marks completeness
            json.dump(asdict(state), fh)
        replace_dir(tmp, path(output_dir))


def reseed(seed: int, step: int) -> None:
    """Seed paddle's generator from the run seed, the step and the rank (see the module docstring).

    The rank term gives every data-parallel process its own dropout masks (rank 0 = single process).
    """
    paddle.seed((seed * 1_000_003 + step + 7_919 * distributed.rank()) % (2**31 - 1))


def restore_rng(rng: dict[str, Any], seed: int, step: int) -> None:
    """Put Python's and numpy's generators back as saved; paddle's is re-derived (:func:`reseed`)."""
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    reseed(seed, step)


def clear(output_dir: str) -> None:
    """Remove an earlier run's checkpoint (a fresh run must never resume into it)."""
    for stale in (path(output_dir), path(output_dir) + ".old"):
        shutil.rmtree(stale, ignore_errors=True)


def load(output_dir: str, model: paddle.nn.Layer, optimizer, fingerprint: dict[str, Any],
         defaults: Optional[dict[str, Any]] = None) -> tuple[LoopState, dict[str, Any]]:
    """Restore model and optimizer; return the loop position and the RNG states to restore.

    The caller restores the RNGs (:func:`restore_rng`) right after creating the data iterator
    of the checkpoint's epoch: creating it draws from paddle's generator on some versions, and
    in the interrupted run that draw happened before the checkpoint was written.
    UserError if there is nothing to resume, if it was made by a run with other settings
    (``fingerprint``: stage, data order, widths, schedule...), or if it cannot be read.  A setting
    the checkpoint does not record (a flag added since it was written) counts as unchanged while it
    has the value the checkpoint ran with (``defaults``: ``config.UNRECORDED``): upgrading the
    toolkit must not strand an interrupted run, nor continue it with a changed behaviour.
    """
    for candidate in (path(output_dir), path(output_dir) + ".old"):
        if os.path.isfile(os.path.join(candidate, "state.json")):
            break
    else:
        raise UserError(f"--resume: no checkpoint in {path(output_dir)} (nothing to resume)")
    try:
        with open(os.path.join(candidate, "state.json")) as fh:
            state = LoopState(**json.load(fh))
        weights = paddle.load(os.path.join(candidate, "model.pdparams"))
        optimizer_state = paddle.load(os.path.join(candidate, "optimizer.pdopt"))
        with open(os.path.join(candidate, "rng.pkl"), "rb") as fh:
            rng = pickle.load(fh)
    except Exception as exc:  # truncated or foreign files: json, pickle and paddle raise many types
        raise UserError(f"--resume: cannot read the checkpoint in {candidate} ({type(exc).__name__})") from None
    defaults = defaults or {}
    recorded = {**{k: v for k, v in defaults.items() if k in fingerprint}, **state.fingerprint}
    changed = sorted(k for k in set(fingerprint) | set(recorded) if fingerprint.get(k) != recorded.get(k))
    if changed:
        raise UserError(f"--resume: the checkpoint in {candidate} was made with other settings "
                        f"({', '.join(f'{k}: {recorded.get(k)} -> {fingerprint.get(k)}' for k in changed)})")
    if set(weights) != set(model.state_dict()):
        raise UserError(f"--resume: the checkpoint in {candidate} holds another model's weights")
    model.set_state_dict(weights)
    to_generated = {n: p.name for n, p in model.named_parameters()}
    optimizer.set_state_dict(_rename_optimizer_state(optimizer_state, to_generated))
    return state, rng
