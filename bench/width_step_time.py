#!/usr/bin/env python
"""Benchmark: what the width stage's training step costs beyond the unavoidable work.

    python bench/width_step_time.py --model_dir bench_out/teachers/minilm-paddle --batch_size 16 --seq_len 128

"Unavoidable" = one forward + backward of the supernet at each width plus one teacher forward
(no_grad), timed with plain calls.  "Toolkit" = ``WidthStrategy.train_step`` with distillation
(teacher once, OFA hooks, soft-CE + DistillConfig hidden MSE, per-width backward) plus the
optimizer step.  The two are interleaved ``--repeats`` times; medians and their ratio are printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import patches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    patches.apply()
    import numpy as np
    import paddle

    from ofa_flexbert.config import RunArgs
    from ofa_flexbert.glue.data import get_task
    from ofa_flexbert.engine.losses import task_loss
    from ofa_flexbert.store.models import load_model
    from ofa_flexbert.app.stages.begin import math_threads
    from ofa_flexbert.app.stages.width import WidthStrategy
    from ofa_flexbert.train.supernet import FlexOFA, convert_to_supernet, mapping_layers
    from ofa_flexbert.train.loop import build_optimizer

    paddle.base.core.set_num_threads(math_threads())
    paddle.seed(0)
    task = get_task("rte")
    run_args = RunArgs(task="rte", stage="width", distill=True)
    teacher = load_model(args.model_dir, 2)
    teacher.eval()
    student = convert_to_supernet(load_model(args.model_dir, 2), run_args.width_mult_list)
    ofa = FlexOFA(student, teacher, mapping_layers(student))
    strategy = WidthStrategy(ofa, None, task, run_args, None, None)
    optimizer, _ = build_optimizer(student, run_args, 1000)
    rng = np.random.RandomState(0)
    batch = {"input_ids": paddle.to_tensor(rng.randint(1000, 20000, (args.batch_size, args.seq_len)).astype("int64")),
             "token_type_ids": paddle.zeros([args.batch_size, args.seq_len], dtype="int64"),
             "labels": paddle.to_tensor(rng.randint(0, 2, args.batch_size).astype("int64"))}

    def toolkit_step() -> None:
        ofa.train()
        strategy.train_step(batch)
        optimizer.step()
        optimizer.clear_grad()

    def bare_step() -> None:
        student.train()
        with paddle.no_grad():
            teacher(batch["input_ids"], token_type_ids=batch["token_type_ids"])
        for subnet in strategy.subnets:
            ofa.use(strategy.configs[subnet.width_mult])
            logits = student(batch["input_ids"], token_type_ids=batch["token_type_ids"])
            task_loss(task, logits, batch["labels"]).backward()
        student.clear_gradients()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    toolkit_step(), bare_step()  # warm-up
    toolkit, bare = [], []
    for i in range(args.repeats):
        toolkit.append(timed(toolkit_step))
        bare.append(timed(bare_step))
        print(f"repeat {i + 1}: toolkit {toolkit[-1]:.2f} s, forward+backward per width + teacher {bare[-1]:.2f} s",
              flush=True)
    t, b = statistics.median(toolkit), statistics.median(bare)
    print(f"median over {args.repeats}: toolkit step {t:.2f} s, unavoidable work {b:.2f} s, ratio {t / b:.3f} "
          f"(batch {args.batch_size} x {args.seq_len}, widths {sorted(run_args.width_mult_list, reverse=True)})")


if __name__ == "__main__":
    main()
