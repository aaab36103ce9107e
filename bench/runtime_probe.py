#!/usr/bin/env python
"""Three facts about Paddle Inference on this machine that the serving and batching decisions rest on.

    python bench/runtime_probe.py --export_dir OUT/sst-2/export/w0.5_d0.67

1. GIL: the share of its idle rate a counting Python thread keeps while another thread runs the
   predictor (near 0: ``run()`` holds the GIL; numpy's matrix product, which releases it, is shown beside).
2. First sight of a shape: per kernel set, the median first and second call at 10 new lengths (batch 1)
   and 10 new batch sizes (length 20).
3. Call cost: the median latency of 12 shapes from 1x8 to 32x48 fitted as ``a + b * tokens``; ``a / b``
   is what one call costs in tokens of work (``deploy/grouping.CALL_COST_TOKENS``).
4. With ``--task``: the Predictor's time per row on 320 dev sentences (seed 0) alone, and in micro-batches
   of 10 and 32 padded in arrival order against length-grouped (``Predictor.predict``), reference kernels.
Writes nothing; prints one line per finding.
"""
from __future__ import annotations

import argparse
import os
import random
import threading
import time

import numpy as np

import patches  # noqa: F401  -- zlib before paddle

from ofa_flexbert.deploy.predictor import Predictor  # noqa: E402
from ofa_flexbert.deploy.runtime import StaticGraph  # noqa: E402
from ofa_flexbert.glue.data import get_task, read_split  # noqa: E402

SHAPES = [(1, 8), (1, 16), (1, 24), (1, 32), (1, 48), (1, 64), (4, 24), (8, 24), (16, 24), (32, 24), (8, 48), (32, 48)]


def call(graph: StaticGraph, batch: int, length: int) -> float:
    ids = np.full((batch, length), 1000, dtype="int64")
    start = time.perf_counter()
    graph(ids, np.zeros_like(ids))
    return time.perf_counter() - start


def counted(work, seconds: float = 1.0) -> int:
    """How far a counting thread gets while ``work`` runs in this one for ``seconds``."""
    stop, out = threading.Event(), []

    def spin():
        n = 0
        while not stop.is_set():
            n += 1
        out.append(n)

    thread = threading.Thread(target=spin)
    thread.start()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()
    stop.set()
    thread.join()
    return out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True, help="a static export (--stage export)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--task", help="also time the Predictor on this task's dev sentences (GLUE_DIR)")
    args = parser.parse_args()
    import paddle

    graph = StaticGraph(args.export_dir, 1, onednn=False)
    call(graph, 32, 48)
    idle = counted(lambda: time.sleep(0.01))
    matrix = np.random.rand(800, 800)
    print(f"paddle {paddle.__version__}: a counting thread keeps {counted(lambda: call(graph, 32, 48)) / idle:.0%} of "
          f"its idle rate while the predictor runs ({counted(lambda: matrix @ matrix) / idle:.0%} beside numpy's "
          "matrix product)")
    for onednn in (False, True):
        graph = StaticGraph(args.export_dir, 1, onednn=onednn)
        call(graph, 1, 8)
        kernels = "oneDNN" if onednn else "reference kernels"
        for label, shapes in (("new lengths (batch 1)", [(1, t) for t in range(10, 40, 3)]),
                              ("new batch sizes (length 20)", [(b, 20) for b in range(2, 12)])):
            first, second = zip(*[(call(graph, *s), call(graph, *s)) for s in shapes])
            print(f"{kernels}, {label}: first call {np.median(first) * 1e3:.1f} ms, second "
                  f"{np.median(second) * 1e3:.1f} ms (medians)")
        for shape in SHAPES:
            call(graph, *shape)
        times = {s: np.median([call(graph, *s) for _ in range(args.rounds)]) * 1e3 for s in SHAPES}
        a, b = np.linalg.lstsq(np.array([[1.0, bs * t] for bs, t in SHAPES]), np.array(list(times.values())),
                               rcond=None)[0]
        print(f"{kernels}: a call costs {a:.2f} ms + {b * 1e3:.0f} us per token -> {a / b:.0f} tokens "
              f"({', '.join(f'{bs}x{t} {ms:.1f}' for (bs, t), ms in times.items())} ms)")

    if args.task:
        per_row_on_dev(args.export_dir, args.task)


def per_row_on_dev(export_dir: str, task_name: str, repeats: int = 3) -> None:
    """Finding 4: ms per row alone, and in micro-batches in arrival order or length-grouped."""
    task = get_task(task_name)
    texts = [e.text_a for e in read_split(task, os.path.join(os.environ["GLUE_DIR"], task.dir_name),
                                          task.dev_splits[0])]
    sample = random.Random(0).sample(texts, 320)
    predictor = Predictor(export_dir, num_threads=1, onednn=False)

    def arrival(chunk):
        return predictor.logits(*predictor.pad(predictor.encode(chunk)))

    def per_row(run, size):
        run(sample[:size])
        start = time.perf_counter()
        for i in range(0, len(sample), size):
            run(sample[i:i + size])
        return (time.perf_counter() - start) / len(sample) * 1e3

    cells = {"alone": [], "10 arrival": [], "10 grouped": [], "32 arrival": [], "32 grouped": []}
    for _ in range(repeats):  # the settings take turns
        cells["alone"].append(per_row(arrival, 1))
        for size in (10, 32):
            cells[f"{size} arrival"].append(per_row(arrival, size))
            cells[f"{size} grouped"].append(per_row(predictor.predict_logits, size))
    print(f"{task_name} dev, reference kernels, ms per row (median of {repeats}): " +
          ", ".join(f"{name} {np.median(v):.2f}" for name, v in cells.items()))


if __name__ == "__main__":
    main()
