"""The one training loop every stage shares.

A stage is a :class:`Strategy`: which model it trains, which subnets it evaluates, what
one training step computes (forward and backward of every subnet, so the gradients of
all subnets are summed into one optimizer step as DynaBERT does), and how to save.
The loop owns everything else, the same way for every stage: AdamW with linear
warm-up/decay, global-norm clipping, the epoch/batch order, periodic evaluation of every
subnet on dev, keeping the checkpoint with the best sum of the primary metric, VisualDL
scalars and the progress bar.
"""
from __future__ import annotations


import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Protocol

import paddle
from tqdm.auto import tqdm

from ofa_flexbert.train import checkpoint, distributed
from ofa_flexbert.config import FINGERPRINT, RunArgs, task_data_dir
from .evaluation import default_evaluation
from ofa_flexbert.store.outputs import SubnetResult, write_eval_results, write_run_info
from ofa_flexbert.engine.routes import Subnet
from ofa_flexbert.glue.tasks import TaskSpec

logger = logging.getLogger("ofa_flexbert")


class Strategy(Protocol):
    """What a stage plugs into :func:`train`."""

    name: str
    model: paddle.nn.Layer
    subnets: list[Subnet]

    def train_step(self, batch: dict) -> dict[str, float]:
        """Forward and backward of every trained subnet on ``batch``; returns loss terms to log."""

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        """Eval-mode logits of ``subnet`` on ``batch``."""

    def save(self, output_dir: str) -> None:
        """Write the trained model (and tokenizer) atomically into ``output_dir``."""

    # Optional: ``after_step(step, log, writer)`` runs after every optimizer step (grafting).
    # Optional: ``evaluate(dev_loaders) -> Evaluation``: the strategy's own evaluation and selection
    # score (the gate stage selects by its loss, not by the task metric).
    # Optional: ``resume_at(step)``: told the step a resumed run continues from.


@dataclass
class TrainResult:
    best_score: float
    best_step: Optional[int]
    best_results: list[SubnetResult]
    steps: int
    seconds: float


def backward_each(subnets: Iterable[Subnet], loss_of: Callable[[Subnet], tuple[str, paddle.Tensor, dict]],
                  balance: Optional[paddle.nn.Layer] = None) -> dict[str, float]:
    """Forward and backward of every subnet in turn, so their gradients add up for one optimizer step.

    ``loss_of(subnet)`` returns ``(tag, loss, terms)``; the result logs ``<tag>/loss``, each
    ``<tag>/<term>`` and the sum over subnets as ``loss``.  Backward runs per subnet (not on
    the sum) so only one subnet's graph is alive at a time.

    ``balance`` (the trained model, --balance_subnet_gradients): each subnet's gradient is
    divided by its global L2 norm before it is added, so every subnet pulls the shared weights
    with the same strength; its norm is logged as ``<tag>/grad_norm``.  Without it, a subnet
    whose gradient is much smaller than the others' barely moves the weights: MiniLM's
    prefix-depth subnets get about a tenth of the full subnet's and never learn (docs/design.md, "Depth").
    Under data parallel the gradients are already averaged over ranks here, so every rank
    computes the same norms.
    """
    params = [p for p in balance.parameters() if not p.stop_gradient] if balance is not None else []
    summed: list[Optional[paddle.Tensor]] = [None] * len(params)
    logs, total = {}, 0.0
    for subnet in subnets:
        tag, loss, terms = loss_of(subnet)
        loss.backward()
        if balance is not None:
            norm = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params if p.grad is not None))
            for i, p in enumerate(params):
                if p.grad is not None:
                    part = p.grad / max(norm, 1e-12)
                    summed[i] = part if summed[i] is None else summed[i] + part
            balance.clear_gradients()  # the next subnet's gradient starts from zero
            logs[f"{tag}/grad_norm"] = norm
        logs.update({f"{tag}/{name}": float(value) for name, value in terms.items()})
        logs[f"{tag}/loss"] = float(loss)
        total += float(loss)
    for p, grad in zip(params, summed):
        if grad is not None:
            p.grad.set_value(grad)
    logs["loss"] = total
    return logs


def total_steps(args: RunArgs, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: --max_steps if set, else epochs x steps per epoch (one per
    --gradient_accumulation_steps batches, the epoch's last group possibly shorter)."""
    per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    return args.total_steps_override or max(1, math.ceil(per_epoch * args.num_train_epochs))


def average_gradients(model: paddle.nn.Layer, count: int) -> None:
    """Divide the gradients summed over ``count`` batches by ``count``: the gradient of the mean loss,
    so k accumulated batches make the update of one k-times larger batch (clipping applies after)."""
    if count > 1:
        for param in model.parameters():
            if param.grad is not None:
                param.grad.set_value(param.grad * (1.0 / count))


def build_optimizer(model: paddle.nn.Layer, args: RunArgs, steps: int):
    """AdamW + linear warm-up/decay + global-norm clipping, no decay on biases and norms."""
    from paddlenlp.transformers import LinearDecayWithWarmup

    scheduler = LinearDecayWithWarmup(args.learning_rate, steps, args.warmup_steps)
    decay = {p.name for n, p in model.named_parameters() if not any(k in n for k in ("bias", "norm"))}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=scheduler,
        parameters=model.parameters(),
        weight_decay=args.weight_decay,
        epsilon=args.adam_epsilon,
        apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(args.max_grad_norm),
    )
    return optimizer, scheduler


def resume_fingerprint(strategy: Strategy, task: TaskSpec, args: RunArgs, steps: int) -> dict:
    """Settings that must be equal for a resumed run to end where the uninterrupted one ends.

    The input model and the data are named by their resolved paths: the teacher of the width
    and depth stages is reloaded from --model_dir on resume, so another directory would
    silently distil from another model.  The flags are those marked ``fingerprint`` in config.py.
    """
    return {"stage": strategy.name, "total_steps": steps, "world_size": distributed.world_size(),
            "model_dir": os.path.realpath(args.model_dir) if args.model_dir else None,
            "data_dir": os.path.realpath(task_data_dir(args.data_dir, task.dir_name)),
            **{k: getattr(args, k) for k in FINGERPRINT}}


class _NoWriter:
    """VisualDL's LogWriter for ranks other than 0: they log nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def add_text(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def save_best(strategy: Strategy, task: TaskSpec, args: RunArgs, results: list[SubnetResult], step: int,
              extra: Optional[dict] = None) -> None:
    """Replace the model in --output_dir by ``strategy``'s, with the results and description that go with it.

    flexbert.json is written first and says ``complete: false`` until the stage finishes and
    rewrites it: a run stopped at any point here leaves a description that at worst calls a
    model incomplete, never an earlier run's complete one beside a new model.
    """
    write_run_info(args, task.name, {"complete": False, "best_step": step})
    strategy.save(args.output_dir)
    write_eval_results(args.output_dir, task.name, strategy.name, task.primary_metric, results, step, extra)


def train(strategy: Strategy, task: TaskSpec, args: RunArgs, train_loader, dev_loaders: dict[str, Iterable],
          initial_best: float = -math.inf) -> TrainResult:
    """Train ``strategy.model`` into ``args.output_dir``; evaluate every ``args.logging_steps`` and at the end.

    The model is saved (atomically) whenever the score beats the best so far, starting
    from ``initial_best`` -- a stage that must not replace a better input model passes its
    score here.  ``eval_results.json`` always describes the saved model.  At every
    evaluation a resume checkpoint is written; with ``args.resume`` the run continues from
    it (weights, optimizer and schedule, RNGs, data position, best so far) and ends where an
    uninterrupted run ends.  A strategy may define ``after_step(step, log, writer)`` (e.g. grafting).

    Under data parallel every rank runs this loop on its shard of each global batch; losses are
    logged as their mean over ranks, and only rank 0 writes (model, results, checkpoint, logs).
    """
    from visualdl import LogWriter

    output_dir = args.output_dir
    steps = total_steps(args, len(train_loader))
    optimizer, scheduler = build_optimizer(strategy.model, args, steps)
    fingerprint = resume_fingerprint(strategy, task, args, steps)
    state = checkpoint.LoopState(best_score=initial_best, fingerprint=fingerprint)
    pending_rng = None
    main = distributed.is_main()
    if args.resume:
        state, pending_rng = checkpoint.load(output_dir, strategy.model, optimizer, fingerprint,
                                             defaults=asdict(RunArgs()))
        if hasattr(strategy, "resume_at"):
            strategy.resume_at(state.step)
    else:
        if main:
            checkpoint.clear(output_dir)
        checkpoint.reseed(args.seed, 0)  # each rank its own dropout stream
    best_results = [SubnetResult(**r) for r in state.best_results]
    start = time.time()
    writer = LogWriter(logdir=os.path.join(output_dir, "vdl", strategy.name)) if main else _NoWriter()
    progress = tqdm(total=steps, initial=state.step, desc=f"{strategy.name} {task.name}", unit="step",
                    dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0, disable=not main)

    def log(message: str) -> None:
        if main:
            progress.write(f"[{strategy.name}] {message}", file=sys.stderr)

    def evaluate_and_keep() -> None:
        """Evaluate; save the model and eval_results.json if the score improved."""
        nonlocal best_results
        if hasattr(strategy, "evaluate"):
            evaluation = strategy.evaluate(dev_loaders)
        else:
            evaluation = default_evaluation(strategy, task, dev_loaders)
        for key, value in evaluation.scalars.items():
            writer.add_scalar(key, value, state.step)
        improved = evaluation.score > state.best_score
        log(f"step {state.step}/{steps}: {evaluation.summary}{'  (best, saved)' if improved else ''}")
        if improved:
            state.best_score, state.best_step, best_results = evaluation.score, state.step, evaluation.results
            state.best_results = [r.to_json() for r in evaluation.results]
            if main:
                save_best(strategy, task, args, evaluation.results, state.step, evaluation.extra)

    after_step = getattr(strategy, "after_step", None)
    try:
        while state.step < steps:
            train_loader.batch_sampler.set_epoch(state.epoch)
            batches = iter(train_loader)
            if pending_rng is not None:
                checkpoint.restore_rng(pending_rng, args.seed, state.step)
                pending_rng = None
            micro: list[dict[str, float]] = []  # the losses of the batches accumulated for this step
            for position, batch in enumerate(batches):
                if position < state.batch:  # resuming inside an epoch: these batches are done
                    continue
                strategy.model.train()
                micro.append(distributed.mean_over_ranks(strategy.train_step(batch)))
                state.batch = position + 1
                if len(micro) < args.gradient_accumulation_steps and state.batch < len(train_loader):
                    continue
                average_gradients(strategy.model, len(micro))
                losses = {key: sum(m[key] for m in micro) / len(micro) for key in micro[0]}
                micro = []
                optimizer.step()
                scheduler.step()
                optimizer.clear_grad()
                state.step += 1
                for key, value in losses.items():
                    writer.add_scalar(f"train/{key}", value, state.step)
                writer.add_scalar("train/learning_rate", optimizer.get_lr(), state.step)
                progress.update(1)
                progress.set_postfix(epoch=state.epoch, loss=f"{losses.get('loss', float('nan')):.4f}", refresh=False)
                evaluation_step = state.step % args.logging_steps == 0 or state.step == steps
                if evaluation_step:  # evaluate and save before grafting, as the reference does
                    evaluate_and_keep()
                if after_step is not None:
                    after_step(state.step, log, writer)
                if evaluation_step:  # the checkpoint includes what after_step changed
                    if main:
                        checkpoint.save(output_dir, strategy.model, optimizer, state)
                    checkpoint.reseed(args.seed, state.step)
                if state.step >= steps:
                    break
            else:
                state.epoch, state.batch = state.epoch + 1, 0
    finally:
        progress.close()
        writer.close()
    return TrainResult(state.best_score, state.best_step, best_results, state.step, time.time() - start)
