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
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import paddle
from tqdm.auto import tqdm

from ofa_flexbert.train import checkpoint, distributed
from ofa_flexbert.config import FINGERPRINT, UNRECORDED, RunArgs, task_data_dir
from .evaluation import Evaluation, default_evaluation
from ofa_flexbert.store.outputs import SubnetResult, write_eval_results, write_run_info
from ofa_flexbert.engine.routes import Subnet
from ofa_flexbert.glue.tasks import TaskSpec

logger = logging.getLogger("ofa_flexbert")


class Strategy:
    """What a stage plugs into :func:`train`: a subclass sets ``name``, ``model`` and ``subnets`` and
    defines :meth:`train_step`, :meth:`logits` and :meth:`save`; the hooks below do nothing unless a
    stage needs them (their defaults are the loop's behaviour, so a stage overrides only what differs)."""

    name: str
    model: paddle.nn.Layer
    subnets: list[Subnet]

    def train_step(self, batch: dict) -> dict[str, float]:
        """Forward and backward of every trained subnet on ``batch``; returns loss terms to log."""
        raise NotImplementedError

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        """Eval-mode logits of ``subnet`` on ``batch``."""
        raise NotImplementedError

    def save(self, output_dir: str) -> None:
        """Write the trained model (and tokenizer) atomically into ``output_dir``."""
        raise NotImplementedError

    def evaluate(self, task: TaskSpec, dev_loaders: dict[str, Iterable]) -> Evaluation:
        """Dev metrics and the selection score: every subnet's primary metric, summed (the gate stage
        selects by its loss instead)."""
        return default_evaluation(self, task, dev_loaders)

    def after_step(self, step: int, log: Callable[[str], None], writer) -> None:
        """Runs after every optimizer step, before the checkpoint (the width stage grafts here)."""

    def resume_at(self, step: int) -> None:
        """Told the step a resumed run continues from (the gate stage's temperature schedule)."""


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
    silently distil from another model.  The flags are those marked ``fingerprint`` in config/args.py.
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
    uninterrupted run ends.

    Under data parallel every rank runs this loop on its shard of each global batch; losses are
    logged as their mean over ranks, and only rank 0 writes (model, results, checkpoint, logs).
    """
    run = _Run(strategy, task, args, train_loader, dev_loaders, initial_best)
    try:
        run.loop()
    finally:
        run.close()
    return TrainResult(run.state.best_score, run.state.best_step, run.best_results, run.state.step,
                       time.time() - run.started)


class _Run:
    """One call of :func:`train`: its state, and the three things it does -- start or resume, take an
    optimizer step, evaluate and keep the best."""

    def __init__(self, strategy: Strategy, task: TaskSpec, args: RunArgs, train_loader,
                 dev_loaders: dict[str, Iterable], initial_best: float):
        from visualdl import LogWriter

        self.strategy, self.task, self.args = strategy, task, args
        self.train_loader, self.dev_loaders = train_loader, dev_loaders
        self.steps = total_steps(args, len(train_loader))
        self.optimizer, self.scheduler = build_optimizer(strategy.model, args, self.steps)
        fingerprint = resume_fingerprint(strategy, task, args, self.steps)
        self.state = checkpoint.LoopState(best_score=initial_best, fingerprint=fingerprint)
        self.pending_rng = None
        self.main = distributed.is_main()
        if args.resume:
            self.state, self.pending_rng = checkpoint.load(args.output_dir, strategy.model, self.optimizer,
                                                           fingerprint, defaults=UNRECORDED)
            strategy.resume_at(self.state.step)
        else:
            if self.main:
                checkpoint.clear(args.output_dir)
            checkpoint.reseed(args.seed, 0)  # each rank its own dropout stream
        self.best_results = [SubnetResult(**r) for r in self.state.best_results]
        self.started = time.time()
        self.writer = LogWriter(logdir=os.path.join(args.output_dir, "vdl", strategy.name)) if self.main \
            else _NoWriter()
        self.progress = tqdm(total=self.steps, initial=self.state.step, desc=f"{strategy.name} {task.name}",
                             unit="step", dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0,
                             disable=not self.main)

    def log(self, message: str) -> None:
        if self.main:
            self.progress.write(f"[{self.strategy.name}] {message}", file=sys.stderr)

    def close(self) -> None:
        self.progress.close()
        self.writer.close()

    def loop(self) -> None:
        """Epochs of batches until the last step; ``gradient_accumulation_steps`` batches per step."""
        state, args = self.state, self.args
        while state.step < self.steps:
            self.train_loader.batch_sampler.set_epoch(state.epoch)
            batches = iter(self.train_loader)
            if self.pending_rng is not None:
                checkpoint.restore_rng(self.pending_rng, args.seed, state.step)
                self.pending_rng = None
            micro: list[dict[str, float]] = []  # the losses of the batches accumulated for this step
            for position, batch in enumerate(batches):
                if position < state.batch:  # resuming inside an epoch: these batches are done
                    continue
                self.strategy.model.train()
                micro.append(distributed.mean_over_ranks(self.strategy.train_step(batch)))
                state.batch = position + 1
                if len(micro) < args.gradient_accumulation_steps and state.batch < len(self.train_loader):
                    continue
                self.step(micro)
                micro = []
                if state.step >= self.steps:
                    break
            else:
                state.epoch, state.batch = state.epoch + 1, 0

    def step(self, micro: list[dict[str, float]]) -> None:
        """One optimizer step from the accumulated batches; evaluation, the hook and the checkpoint."""
        state, writer = self.state, self.writer
        average_gradients(self.strategy.model, len(micro))
        losses = {key: sum(m[key] for m in micro) / len(micro) for key in micro[0]}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.clear_grad()
        state.step += 1
        for key, value in losses.items():
            writer.add_scalar(f"train/{key}", value, state.step)
        writer.add_scalar("train/learning_rate", self.optimizer.get_lr(), state.step)
        self.progress.update(1)
        self.progress.set_postfix(epoch=state.epoch, loss=f"{losses.get('loss', float('nan')):.4f}", refresh=False)
        evaluation_step = state.step % self.args.logging_steps == 0 or state.step == self.steps
        if evaluation_step:  # evaluate and save before grafting, as the reference does
            self.evaluate_and_keep()
        self.strategy.after_step(state.step, self.log, writer)
        if evaluation_step:  # the checkpoint includes what after_step changed
            if self.main:
                checkpoint.save(self.args.output_dir, self.strategy.model, self.optimizer, state)
            checkpoint.reseed(self.args.seed, state.step)

    def evaluate_and_keep(self) -> None:
        """Evaluate; save the model and eval_results.json if the score improved."""
        state = self.state
        evaluation = self.strategy.evaluate(self.task, self.dev_loaders)
        for key, value in evaluation.scalars.items():
            self.writer.add_scalar(key, value, state.step)
        improved = evaluation.score > state.best_score
        self.log(f"step {state.step}/{self.steps}: {evaluation.summary}{'  (best, saved)' if improved else ''}")
        if improved:
            state.best_score, state.best_step, self.best_results = evaluation.score, state.step, evaluation.results
            state.best_results = [r.to_json() for r in evaluation.results]
            if self.main:
                save_best(self.strategy, self.task, self.args, evaluation.results, state.step, evaluation.extra)
