"""INT8: onnxruntime's dynamic quantization of an exported ``model.onnx`` (``--stage export --quantize int8``).

Why this path and no other (docs/decisions.md, "INT8"): on this AVX-512 VNNI CPU it is the only INT8
path that is both faster and as accurate as float on our BERTs -- 2.3-2.9x faster than the float ONNX
model at 1 thread, +0.49 points on SST-2 dev for the full model.  Paddle Inference's oneDNN INT8 runs
real INT8 kernels but lost 25 points of accuracy (all ops) or 1 point (FC only), and PaddleSlim's PTQ
cannot read paddle 3's PIR programs.

paddle2onnx stores the weights as ``Constant`` nodes, and ``quantize_dynamic`` quantizes only MatMuls
whose weights are initializers: on the raw file it silently quantizes nothing.  ``quant_pre_process``
(shape inference and onnxruntime's basic graph optimisation) turns them into initializers first; a
result without any integer MatMul is refused rather than shipped as "INT8".
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from typing import Any, Sequence

from ofa_flexbert.errors import UserError

INT8_SUFFIX = "_int8"  # an INT8 export's tag: the float subnet's tag plus this


def int8_tag(tag: str) -> str:
    """The folder name of a subnet's INT8 export."""
    return tag + INT8_SUFFIX


def quantize_onnx(float_onnx: str, int8_onnx: str, verbose: bool = False) -> dict[str, Any]:
    """Write the INT8 form of ``float_onnx`` to ``int8_onnx``; return what the manifest records of it.

    onnxruntime's quantizer logs a line per MatMul it skips on the root logger, and its graph optimiser a
    warning per unused initializer; unless ``verbose`` both are held back for the call."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8_onnx + ".pre.onnx"
    if not verbose:
        logging.disable(logging.INFO)
        onnxruntime.set_default_logger_severity(3)  # errors only
    try:
        # symbolic shape inference needs sympy, which nothing else here uses; ONNX's own inference suffices
        quant_pre_process(float_onnx, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, int8_onnx, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
        onnxruntime.set_default_logger_severity(2)  # its default: warnings
        if os.path.exists(prepared):
            os.remove(prepared)
    ops = [node.op_type for node in onnx.load(int8_onnx).graph.node]
    float_matmuls = [node.op_type for node in onnx.load(float_onnx).graph.node].count("MatMul")
    integer = ops.count("MatMulInteger")
    if integer == 0:
        raise UserError(f"--quantize int8: onnxruntime quantized none of the {float_matmuls} MatMuls of "
                        f"{os.path.basename(float_onnx)}; nothing was written")
    return {"mode": "int8", "runtime": "onnxruntime", "method": "quantize_dynamic after quant_pre_process",
            "weights": "int8, per output channel", "activations": "uint8, per tensor, computed per batch",
            "calibration": "none (dynamic: activation ranges are measured on each input)",
            "integer_matmuls": integer, "float_matmuls": ops.count("MatMul"),  # e.g. attention's activation products
            "onnxruntime": onnxruntime.__version__}


def combined(records: Sequence[dict[str, Any]], graphs: int) -> dict[str, Any]:
    """One quantization record for an export of several graphs (a cascade's stages, a segment export's graphs):
    the method of each, the MatMuls summed, and how many of the ``graphs`` were quantized."""
    return {**records[0], "integer_matmuls": sum(r["integer_matmuls"] for r in records),
            "float_matmuls": sum(r["float_matmuls"] for r in records), "graphs_quantized": len(records),
            "graphs": graphs}


def quantize_folder(float_dir: str, int8_dir: str, verbose: bool = False) -> dict[str, Any]:
    """The INT8 form of every ``*.onnx`` graph in ``float_dir`` (a segment export's ``segments/``), written
    under the same names in ``int8_dir``; a graph without MatMuls (the embeddings' lookups and norms, when no
    gate decides there) is copied as it is, since there is nothing to quantize in it."""
    import onnx

    os.makedirs(int8_dir, exist_ok=True)
    paths = sorted(glob.glob(os.path.join(float_dir, "*.onnx")))
    records = []
    for path in paths:
        target = os.path.join(int8_dir, os.path.basename(path))
        if not any(node.op_type == "MatMul" for node in onnx.load(path).graph.node):
            shutil.copyfile(path, target)
            continue
        records.append(quantize_onnx(path, target, verbose))
    if not records:
        raise UserError(f"--quantize int8: no graph in {float_dir} has a MatMul to quantize; nothing was written")
    return combined(records, len(paths))
