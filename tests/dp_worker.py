"""The CLI under ``paddle.distributed.launch``, for tests/train/test_distributed.py; dumps this rank's weights.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/dp_worker.py DUMP_DIR MODE CLI-ARGS...

MODE is ``sync`` (the toolkit as users run it), ``nosync`` (control: no DataParallel wrapper, so
each rank trains on its own shard and the ranks drift apart) or ``crash@N`` (rank 0 dies in
training step N, like a killed job).  After training, each rank writes its trained model's
weights (under the plain model's names) to ``DUMP_DIR/rank<r>.npz``, and to ``DUMP_DIR/rank<r>.json``
how many dev rows it evaluated (per subnet, summed over evaluations) and how many rows it ran
through importance computations (width stage: rewiring and grafts).
"""
import json
import os
import sys


import patches  # noqa: E402,F401  -- before paddle

import numpy as np  # noqa: E402


def main() -> int:
    dump_dir, mode, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    from ofa_flexbert.train import distributed, loop as training
    from ofa_flexbert.app.stages import depth, finetune, gate, width
    from ofa_flexbert.train.supernet import plain_state_dict
    from ofa_flexbert.app.cli import main as cli

    original_train, original_importance = training.train, width.compute_importance
    rows = {"eval_rows": 0, "importance_rows": 0}

    def counting_importance(ofa, batches, task):
        def counted():
            for batch in batches:
                rows["importance_rows"] += int(batch["input_ids"].shape[0])
                yield batch

        return original_importance(ofa, counted(), task)

    def train_and_dump(strategy, *args, **kwargs):
        logits = getattr(strategy, "logits", None)  # the gate stage evaluates its own way

        def counting_logits(subnet, batch):
            rows["eval_rows"] += int(batch["input_ids"].shape[0])
            return logits(subnet, batch)

        if logits is not None:
            strategy.logits = counting_logits
        result = original_train(strategy, *args, **kwargs)
        weights = {name: value.numpy() for name, value in plain_state_dict(strategy.model).items()}
        os.makedirs(dump_dir, exist_ok=True)
        np.savez(os.path.join(dump_dir, f"rank{distributed.rank()}.npz"), **weights)
        with open(os.path.join(dump_dir, f"rank{distributed.rank()}.json"), "w") as fh:
            json.dump(rows, fh)
        return result

    for stage in (finetune, width, depth, gate):
        stage.train = train_and_dump
    width.compute_importance = counting_importance
    if mode == "nosync":
        distributed.data_parallel = lambda model, **kwargs: model
    elif mode.startswith("crash@"):
        crash_step, steps = int(mode[len("crash@"):]), {"n": 0}
        original_step = width.WidthStrategy.train_step

        def train_step(self, batch):
            steps["n"] += 1
            if steps["n"] == crash_step and distributed.is_main():
                os._exit(3)
            return original_step(self, batch)

        width.WidthStrategy.train_step = train_step
    elif mode != "sync":
        raise SystemExit(f"unknown mode {mode}")
    return cli(argv)


if __name__ == "__main__":
    from ofa_flexbert.train.distributed import exit_process

    exit_process(main())
