"""The runtimes an export runs on: Paddle Inference predictors and onnxruntime sessions, CPU.

The low-level pieces the predictors share (:class:`predictor.Predictor` for a static subnet,
:class:`dynamic_predictor.DynamicPredictor` for per-layer graphs, :class:`cascade_predictor.CascadePredictor`
for a chain of static subnets), so none imports another.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from ofa_flexbert.errors import UserError

from .layout import INPUT_NAMES, MODEL_PREFIX, graph_file, onnx_file


def paddle_predictor(export_dir: str, num_threads: int = 1, onednn: bool = True, prefix: str = MODEL_PREFIX):
    """A Paddle Inference predictor for the exported graph ``<prefix>.*``, CPU, with ``num_threads`` math threads.

    oneDNN is on by default in both CPU builds (docs/reference.md, Export and Paddle Inference); it is set explicitly either way so a
    benchmark states what it ran (bench/export_latency.py: it is faster for batches of long
    inputs, slower for single short ones).
    """
    import paddle
    import paddle.inference as inference

    graph = graph_file(export_dir, prefix)
    if graph.endswith(".json") and int(paddle.__version__.split(".")[0]) < 3:  # it would segfault (docs/reference.md, Export and Paddle Inference)
        raise UserError(f"--export_dir {export_dir}: model.json was written by paddle 3, whose format paddle "
                        f"{paddle.__version__}'s Paddle Inference cannot read; predict with paddle >= 3, or export "
                        "again under this paddle")
    config = inference.Config(graph, os.path.join(export_dir, prefix + ".pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(num_threads)
    switch = ("enable_" if onednn else "disable_") + ("onednn" if hasattr(config, "enable_onednn") else "mkldnn")
    getattr(config, switch)()  # 3.x names it oneDNN, 2.6 MKLDNN
    config.switch_ir_optim(True)
    config.disable_glog_info()
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # e.g. paddle 2.6 given a paddle 3 model.json
        raise UserError(f"--export_dir {export_dir}: Paddle Inference cannot load {os.path.basename(graph)} "
                        f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
                        "export with the paddle version that runs it") from None


def run_graph(predictor, names: Sequence[str], arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Feed ``arrays`` to a Paddle Inference predictor's inputs by name; return its first output."""
    return run_graph_outputs(predictor, names, arrays, 1)[0]


def run_graph_outputs(predictor, names: Sequence[str], arrays: Sequence[np.ndarray],
                      count: Optional[int] = None) -> list[np.ndarray]:
    """Feed ``arrays`` to a Paddle Inference predictor's inputs by name; return its outputs in the order
    the traced forward returned them (the first ``count``, default all)."""
    for name, array in zip(names, arrays):
        handle = predictor.get_input_handle(name)
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(array)
    predictor.run()
    outputs = predictor.get_output_names()
    return [predictor.get_output_handle(name).copy_to_cpu() for name in outputs[:count]]


def entropy(logits: np.ndarray, normalized: bool) -> np.ndarray:
    """Natural-log entropy of softmax(logits) per row (divided by ln C when ``normalized``): ``gate.ramps.entropy``
    in numpy, for the predictors' exit and cascade checks."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    value = -(np.exp(log_p) * log_p).sum(axis=1)
    return value / np.log(logits.shape[1]) if normalized else value


def onnx_session(export_dir: str, num_threads: int = 1, prefix: str = MODEL_PREFIX):
    """An onnxruntime CPU session for the ``<prefix>.onnx`` (``model.onnx``) that ``--format onnx`` wrote."""
    path = os.path.join(export_dir, onnx_file(prefix))
    if not os.path.isfile(path):
        raise UserError(f"--export_dir {export_dir}: no {onnx_file(prefix)} (export with --format onnx)")
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--runtime onnx: onnxruntime is not installed (pip install onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: it warns about every unused initializer
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


RUNTIMES = ("paddle", "onnx")


def graph_runner(export_dir: str, prefix: str, num_threads: int = 1, onednn: bool = True,
                 runtime: str = "paddle") -> Callable[[Sequence[str], Sequence[np.ndarray]], list[np.ndarray]]:
    """``run(names, arrays) -> outputs``: the graph ``<prefix>.*`` on Paddle Inference or onnxruntime (its
    ``<prefix>.onnx``), inputs by name, outputs in the order the traced forward returned them."""
    if runtime == "onnx":
        session = onnx_session(export_dir, num_threads, prefix)
        return lambda names, arrays: session.run(None, dict(zip(names, arrays)))
    predictor = paddle_predictor(export_dir, num_threads, onednn, prefix=prefix)
    return lambda names, arrays: run_graph_outputs(predictor, names, arrays)


class StaticGraph:
    """One static subnet export on one runtime: padded int64 ``(input_ids, token_type_ids)`` -> logits [B, C]."""

    def __init__(self, export_dir: str, num_threads: int = 1, onednn: bool = True, runtime: str = "paddle"):
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = runtime
        if runtime == "onnx":
            self._session = onnx_session(export_dir, num_threads)
        else:
            self._predictor = paddle_predictor(export_dir, num_threads, onednn)

    def __call__(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        arrays = (np.ascontiguousarray(input_ids, dtype="int64"), np.ascontiguousarray(token_type_ids, dtype="int64"))
        if self.runtime == "onnx":  # by name: conversion may reorder the inputs (docs/reference.md, Export and Paddle Inference)
            return self._session.run(None, dict(zip(INPUT_NAMES, arrays)))[0]
        return run_graph(self._predictor, INPUT_NAMES, arrays)
