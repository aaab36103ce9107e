#!/usr/bin/env python
"""Benchmark probe: how strongly each gate is pushed by distillation and by the MACs share in
route training (``--gate_training routes``), per gate, on a few training batches.

    GLUE_DIR=../shared/data/glue python bench/route_gradients.py --task sst-2 \\
        --model_dir bench_out/dynamic/sst-2/gate --batches 3            # trained gates
    ... --random_gates                                                   # the same gates' settings, random

For each batch: the straight-through gated model (``gate.relaxed``, Gumbel noise, τ = 1), the
norm of the gradient of the distillation loss and of the MACs share with respect to each gate's
logits.  The two terms of ``gate.loss.route_loss`` act through these gradients, so their ratio
per gate says which term decides that gate.
"""
from __future__ import annotations

import argparse

import benchlib  # noqa: F401  -- puts the project on the path

import patches  # noqa: E402  -- before paddle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model_dir", required=True, help="a gate stage output (a model with gates)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--random_gates", action="store_true", help="fresh gates with the saved gates' settings")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    patches.apply()
    import paddle

    from gate.io import load_gates
    from gate.loss import macs_share
    from gate.modules import Gates
    from gate.relaxed import relaxed_classify
    from gate.settings import route_costs
    from ofa_flexbert.config import task_data_dir
    from ofa_flexbert.glue.data import encode, get_task, make_loader, read_split
    from ofa_flexbert.engine.encoder import classify
    from ofa_flexbert.engine.losses import logit_distillation
    from ofa_flexbert.store.models import freeze, load_model, load_tokenizer, recorded_pooling
    from ofa_flexbert.engine.routes import Route

    task = get_task(args.task)
    model = freeze(load_model(args.model_dir, task.num_labels, require_classifier=True))
    model.bert.config.pooling = recorded_pooling(args.model_dir)
    gates = load_gates(args.model_dir)
    if gates is None:
        raise SystemExit(f"--model_dir {args.model_dir}: no gates there (run --stage gate first)")
    if args.random_gates:
        paddle.seed(1)
        gates = Gates(gates.hidden, gates.settings)
    tokenizer = load_tokenizer(args.model_dir)
    examples = read_split(task, task_data_dir(None, task.dir_name), "train")[:args.batches * args.batch_size]
    loader = make_loader(encode(examples, task, tokenizer, 128), tokenizer, args.batch_size)
    config = model.bert.config
    print("| batch | distillation | MACs share | distillation gradient per gate | share gradient per gate |")
    print("|---|---|---|---|---|")
    for index, batch in enumerate(loader):
        with paddle.no_grad():
            teacher = classify(model, batch["input_ids"], batch["token_type_ids"], Route.uniform(config)).logits
        paddle.seed(args.seed + index)
        out = relaxed_classify(model, batch["input_ids"], batch["token_type_ids"], gates,
                               gates.settings.class_widths, tau=1.0, noise=True)
        lengths = (batch["input_ids"] != model.bert.pad_token_id).astype("int64").sum(axis=1).numpy()
        share = macs_share(out.choices, [route_costs(config, gates.settings, int(t)) for t in lengths])
        distill = logit_distillation(task, out.logits, teacher)
        by_distill = paddle.grad(distill, out.gate_logits, retain_graph=True)
        by_share = paddle.grad(share, out.gate_logits)
        norms = (lambda grads: " ".join(f"{float(paddle.linalg.norm(g)):.4f}" for g in grads))
        print(f"| {index} | {float(distill):.4f} | {float(share):.3f} | {norms(by_distill)} | {norms(by_share)} |")


if __name__ == "__main__":
    main()
