"""Stage ``profile``: measure what graph calls cost on this machine and write the latency model's table.

    python run_ofa_glue.py --task sst-2 --stage profile --model_dir WD --output_dir PROF
    python run_ofa_glue.py --task sst-2 --stage search --model_dir WD --output_dir S \\
        --cost latency --cost_table PROF/cost_table.json --latency_batch_size 1

The probes (``adaptive.latency``: a pass-through call, the embeddings, one encoder layer per
--width_mult_list width, a classification head) are traced from --model_dir into a temporary folder
the way ``--stage export`` traces graphs, loaded in Paddle Inference with --num_threads and --onednn
as a predictor would load them (with ``--runtime onnx``: converted to ONNX and run on onnxruntime; with
``--quantize int8`` also quantized as ``--stage export --quantize int8`` quantizes, so that the search
can price INT8 subnets, ``--int8_cost_table``), and timed at every (--profile_batch_sizes x --profile_lengths) shape:
the grid is walked three times, a probe at a time (settled first: :func:`time_probes`), each time two
warm-up calls per shape (oneDNN builds kernels per shape) and a third of --profile_repeats timed calls;
the median of them is kept.

Why probes and not the exported graphs (a decision, docs/decisions.md): a table of one export's graphs
prices only that export; the search prices every static subnet, class -> width map, exit threshold
and cascade, which are made of these parts.  How well the composition predicts a real export is
measured (bench/latency_model.py, docs/benchmarks.md), not assumed.
"""
from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from ofa_flexbert.adaptive.latency import CostTable, EMBEDDINGS, table_kernels, write_cost_table
from ofa_flexbert.adaptive.setting import QUANTIZED
from ofa_flexbert.app.console import quiet_native
from ofa_flexbert.app.report import StageReport
from ofa_flexbert.config import RunArgs
from ofa_flexbert.deploy.layout import INPUT_NAMES, LAYER_INPUT_NAMES
from ofa_flexbert.engine.routes import depth_for
from ofa_flexbert.store.outputs import package_versions, write_run_info
from .begin import math_threads, start
from .inputs import check_pooling
from .preamble import evaluation_model

logger = logging.getLogger("ofa_flexbert")

WARMUP = 2  # untimed calls per probe and shape (oneDNN builds kernels per shape)
SETTLE = 10  # untimed calls when a probe takes over from another (its weights back into the cache)
RUNTIME_NAMES = {"paddle": "paddle_inference", "onnx": "onnxruntime"}  # a cost table's meta["runtime"]
PASSES = 3  # the grid is walked this many times, --profile_repeats / PASSES calls per probe and shape each time


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows: recorded so a table names its machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_inputs(name: str, rows: int, span: int, hidden_size: int, vocab_size: int, rng) -> tuple:
    """Random inputs of one shape for a probe: token ids for the embeddings, else hidden states and a
    zero (attend-everywhere) additive mask."""
    if name == EMBEDDINGS:
        ids = rng.integers(1, vocab_size, size=(rows, span)).astype("int64")
        return INPUT_NAMES, (ids, np.zeros_like(ids))
    hidden = rng.standard_normal((rows, span, hidden_size)).astype("float32")
    return LAYER_INPUT_NAMES, (hidden, np.zeros((rows, 1, 1, span), dtype="float32"))


def probe_runners(folder: str, probes: dict[str, tuple[str, int]], threads: int, onednn: bool, runtime: str,
                  quantize: bool, verbose: bool) -> dict[str, Callable]:
    """Per probe, ``run(names, arrays)`` on the runtime a predictor of that kind would use: the saved Paddle
    graphs on Paddle Inference, or their ONNX form (``deploy.graphs.save_onnx``) on onnxruntime, quantized
    as ``--quantize int8`` quantizes an export (``deploy.quantize.quantize_folder``) when ``quantize``."""
    from ofa_flexbert.deploy.graphs import save_onnx
    from ofa_flexbert.deploy.quantize import quantize_folder
    from ofa_flexbert.deploy.runtime import graph_runner

    names = {name: os.path.basename(prefix) for name, (prefix, _) in probes.items()}
    if runtime == "paddle":
        return {name: graph_runner(folder, base, threads, onednn) for name, base in names.items()}
    for base in names.values():
        save_onnx(folder, base)
    if quantize:
        quantize_folder(folder, os.path.join(folder, "int8"), verbose)
        folder = os.path.join(folder, "int8")
    return {name: graph_runner(folder, base, threads, runtime="onnx") for name, base in names.items()}


def time_probes(runners: dict[str, Callable], shapes: list[tuple[int, int]], hidden_size: int, vocab_size: int,
                calls: int, seed: int) -> dict[str, list[list[float]]]:
    """Per probe, ``[rows, span, median ms]`` at every shape.  The grid is walked :data:`PASSES` times, a
    probe at a time: :data:`SETTLE` untimed calls when a probe takes over from another, then at each shape
    :data:`WARMUP` untimed calls and ``calls`` timed ones.

    Why a probe at a time and the settling calls: a predictor calls the same graph batch after batch, and
    after another graph ran, a graph's first calls are slow while its weights come back into the cache --
    measured on onnxruntime at batch 1, about eight calls, up to twice the settled time
    (docs/benchmarks.md, the latency model on onnxruntime).  Probes that took turns at every shape were
    timed in that transient and over-predicted batch 1 by up to half.  Several passes, so that a slow
    spell on the machine falls on a third of each probe's calls rather than on all of one probe's."""
    rng = np.random.default_rng(seed)
    inputs = {(name, shape): probe_inputs(name, *shape, hidden_size, vocab_size, rng) for shape in shapes
              for name in runners}
    times: dict[tuple[str, tuple[int, int]], list[float]] = {key: [] for key in inputs}
    with tqdm(total=PASSES * len(shapes) * len(runners), desc="profile", unit="shape", leave=False) as bar:
        for _ in range(PASSES):
            for name, run_probe in runners.items():
                for _ in range(SETTLE):
                    run_probe(*inputs[(name, shapes[0])])
                for shape in shapes:
                    names, arrays = inputs[(name, shape)]
                    for _ in range(WARMUP):
                        run_probe(names, arrays)
                    for _ in range(calls):
                        begin = time.perf_counter()
                        run_probe(names, arrays)
                        times[(name, shape)].append((time.perf_counter() - begin) * 1000.0)
                    bar.update(1)
    return {name: [[rows, span, float(np.median(times[(name, (rows, span))]))] for rows, span in shapes]
            for name in runners}


def run(args: RunArgs) -> StageReport:
    """``--stage profile``: time the probes, fit them, write cost_table.json to --output_dir."""
    from ofa_flexbert.deploy.graphs import save_probes

    started = time.time()
    task, _ = start(args)
    pooling = check_pooling(args)
    quantize = args.quantize == "int8"
    runtime = "onnx" if quantize else args.runtime  # INT8 is onnxruntime's (deploy/quantize.py)
    threads, onednn = math_threads(args.num_threads), args.onednn == "on" and runtime == "paddle"
    lengths = sorted({min(t, args.max_seq_length) for t in args.profile_lengths})
    shapes = [(b, t) for b in sorted(set(args.profile_batch_sizes)) for t in lengths]
    config = evaluation_model(args.model_dir, task, pooling).bert.config
    with tempfile.TemporaryDirectory(prefix="ofa_flexbert_probes_") as folder:
        with quiet_native(args.verbose):
            depths = [depth_for(config.num_hidden_layers, d) for d in args.depth_mult_list]
            probes = save_probes(lambda: evaluation_model(args.model_dir, task, pooling), args.width_mult_list, folder,
                                 depths)
            runners = probe_runners(folder, probes, threads, onednn, runtime, quantize, args.verbose)
        calls = max(1, -(-args.profile_repeats // PASSES))
        points = time_probes(runners, shapes, config.hidden_size, config.vocab_size, calls, args.seed)
    meta = {"task": task.name, "source_model": os.path.abspath(args.model_dir), "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
            "pooling": pooling, "probe_layers": {name: layers for name, (_, layers) in probes.items() if layers},
            "runtime": RUNTIME_NAMES[runtime], "quantize": QUANTIZED if quantize else "none", "onednn": onednn,
            "num_threads": threads, "batch_sizes": sorted(set(args.profile_batch_sizes)), "lengths": lengths,
            "repeats": PASSES * calls, "passes": PASSES, "warmup": WARMUP, "settle": SETTLE, "cpu": cpu_name(),
            "cores": os.cpu_count(), "versions": package_versions(),
            "model": "per probe, the median ms at each (batch size, length); bilinear between (adaptive/latency.py)"}
    table = CostTable(points, meta)
    path = write_cost_table(args.output_dir, table)
    for name, pts in points.items():
        small, large = pts[0], pts[-1]
        logger.info(f"profile {task.name}: {name}: {small[2]:.3f} ms at {small[0]}x{small[1]}, "
                    f"{large[2]:.2f} ms at {large[0]}x{large[1]}")
    seconds = round(time.time() - started, 1)
    if onednn:
        logger.warning(f"profile {task.name}: a oneDNN table under-predicts real batches, whose shapes change from "
                       "call to call (docs/benchmarks.md, the latency model); --onednn off is the accurate one")
    logger.info(f"profile {task.name}: {len(shapes)} shapes x {len(points)} probes ({threads} thread(s), "
                f"{table_kernels(meta)}) in {seconds:.0f} s; {path}")
    write_run_info(args, task.name, {"complete": True, "cost_table": path})
    return StageReport("profile", task.name, args.output_dir, task.primary_metric, seconds=seconds)
