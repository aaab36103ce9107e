#!/usr/bin/env python
"""Diagnosis: why do prefix-depth subnets of a model collapse to one class in the depth stage?

    GLUE_DIR=../shared/data/glue python bench/depth_diagnosis.py --task sst-2 \
        --model_dir bench_out/grafting/sst-2/sst-2-s1-plain --out bench_out/shallow/diagnosis.md

Two measurements on the depth stage's starting model (the width-stage output), no training:

1. How much the [CLS] hidden state varies across inputs after each layer (std over dev
   examples, averaged over features).  The classifier reads [CLS] (pooler, then linear): where
   [CLS] is the same for every input, a subnet that stops there predicts one class.  Then the
   share of that spread each depth's subnet keeps, per depth rule: the check the depth stage
   runs before training (ofa_flexbert/train/diagnostics.py).
2. The gradient norm of the logit-distillation loss of the full-depth subnet and of each
   shallower subnet (prefix and every-other layers), on the same training batches.  The depth
   stage sums the subnets' gradients before one clipped AdamW step, so a subnet whose gradient
   is a small fraction of the others' barely moves the shared weights.
"""
from __future__ import annotations

import argparse

import numpy as np

import patches  # noqa: E402  -- before paddle

from benchlib import atomic_write  # noqa: E402

from ofa_flexbert.train.diagnostics import CHECK_EXAMPLES  # noqa: E402  -- the depth stage's own sample size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--dev_examples", type=int, default=CHECK_EXAMPLES)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--depths", default="0.5,0.75")
    args = parser.parse_args()

    patches.apply()
    import paddle

    from ofa_flexbert import data as D
    from ofa_flexbert.config import task_data_dir
    from ofa_flexbert.train.diagnostics import SPREAD_WARNING_SHARE, pooled_spread, shallow_depth_check
    from ofa_flexbert.engine.losses import logit_distillation
    from ofa_flexbert.store.models import load_model, load_tokenizer
    from ofa_flexbert.engine.routes import depth_layers

    paddle.seed(0)
    task = D.get_task(args.task)
    data_dir = task_data_dir(None, task.dir_name)
    tokenizer = load_tokenizer(args.model_dir)
    student = load_model(args.model_dir, task.num_labels)
    teacher = load_model(args.model_dir, task.num_labels)
    teacher.eval()
    layers = student.bert.config.num_hidden_layers

    def loader(split: str, count: int):
        examples = D.read_split(task, data_dir, split)[:count]
        return D.make_loader(D.encode(examples, task, tokenizer, 128), tokenizer, 32)

    dev = list(loader("dev", args.dev_examples))
    spread = pooled_spread(student, dev)
    depths = sorted({float(x) for x in args.depths.split(",")} | {1.0})
    shares = {rule: shallow_depth_check(student, dev, depths, rule)[0] for rule in ("prefix", "every_other")}

    student.train()
    subnets = [("full", list(range(layers)))]
    for d in (float(x) for x in args.depths.split(",")):
        for rule in ("prefix", "every_other"):
            subnets.append((f"d{d:g} {rule}", depth_layers(layers, d, rule)))
    norms: dict[str, list[float]] = {name: [] for name, _ in subnets}
    for batch in loader("train", 32 * args.batches):
        with paddle.no_grad():
            target = teacher(batch["input_ids"], token_type_ids=batch["token_type_ids"])
        for name, run in subnets:
            student.clear_gradients()
            paddle.seed(1)  # the same dropout masks for every subnet
            logits = student(batch["input_ids"], token_type_ids=batch["token_type_ids"], layer_indices=run)
            logit_distillation(task, logits, target).backward()
            squares = sum(float((p.grad ** 2).sum()) for p in student.parameters() if p.grad is not None)
            norms[name].append(squares ** 0.5)
    student.clear_gradients()

    lines = [f"Model: `{args.model_dir}` ({layers} layers), task {args.task}.", "",
             f"[CLS] spread across {args.dev_examples} dev inputs (std over inputs, mean over features):", "",
             "| after layer | " + " | ".join(str(i) for i in range(layers + 1)) + " |",
             "|---|" + "---|" * (layers + 1),
             "| [CLS] std | " + " | ".join(f"{s:.4f}" for s in spread) + " |", "",
             "The depth stage's check (`diagnostics.shallow_depth_check`, warning below "
             f"{SPREAD_WARNING_SHARE:.0%}): the [CLS] spread each subnet hands its classifier, as a share of "
             "full depth's:", "",
             "| rule | " + " | ".join(f"d{d:g}" for d in depths) + " |", "|---|" + "---|" * len(depths),
             *(f"| {rule} | " + " | ".join(f"{shares[rule][d]:.4f}" for d in depths) + " |" for rule in shares), "",
             f"Gradient norm of the logit-distillation loss per subnet ({args.batches} training batches of 32, "
             "train mode, same dropout masks), and its ratio to the full-depth subnet's:", "",
             "| subnet | layers run | gradient norm per batch | median ratio to full |", "|---|---|---|---|"]
    full = np.array(norms["full"])
    for name, run in subnets:
        values = np.array(norms[name])
        lines.append(f"| {name} | {run} | {', '.join(f'{v:.3f}' for v in values)} | "
                     f"{float(np.median(values / full)):.3f} |")
    text = "\n".join(lines) + "\n"
    atomic_write(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
