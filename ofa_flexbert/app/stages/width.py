"""Stage ``width``: DynaBERT's width-adaptive training with Flexible-BERT's neural grafting.

1. The student is a copy of the teacher converted into an OFA supernet; the teacher stays
   frozen at full size, in eval mode.
2. Heads and FFN neurons are rewired by importance so every narrower subnet is a prefix.
3. Each batch trains every width, widest first, with gradients summed into one AdamW step:
   with distillation (--distill or --data_aug) ``width_lambda1 · soft-CE(logits, teacher) +
   width_lambda2 · Σ MSE(hidden states incl. embeddings, teacher)`` -- the hidden part through
   PaddleSlim's DistillConfig mapping layers; without it, the task loss on labels.
4. With --graft_during_training, grafting (grafting.py) on the schedule of GraftSchedule.

The output is a plain BERT directory (heads/neurons in importance order): a valid --model_dir
for the depth stage and for inference at any width.
"""
from __future__ import annotations

import logging

import paddle

from ofa_flexbert.train import checkpoint, distributed
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.train.grafting import GraftSchedule, default_schedule, graft
from ofa_flexbert.engine.losses import logit_distillation, task_loss
from ofa_flexbert.store.models import load_model
from ofa_flexbert.engine.routes import Subnet
from ofa_flexbert.train.supernet import FlexOFA, compute_importance, convert_to_supernet, mapping_layers, rewire
from ofa_flexbert.train.loop import total_steps, train
from .begin import start
from .task_data import load_task_data
from ofa_flexbert.app.report import StageReport, finish
from ofa_flexbert.train.supernet import SupernetStrategy

logger = logging.getLogger("ofa_flexbert")


class WidthStrategy(SupernetStrategy):
    """Every width per batch (widest first), gradients summed; optional grafting after steps."""

    name = "width"

    def __init__(self, ofa: FlexOFA, tokenizer, task: TaskSpec, args: RunArgs, importance_loader,
                 schedule: GraftSchedule | None):
        self.ofa, self.tokenizer, self.task, self.args = ofa, tokenizer, task, args
        self.model = ofa.model
        self.subnets = [Subnet(w, 1.0) for w in sorted(set(args.width_mult_list), reverse=True)]
        self.configs = {s.width_mult: ofa.subnet_config(s.width_mult) for s in self.subnets}
        self.distill = ofa.teacher is not None
        self.importance_loader, self.schedule = importance_loader, schedule

    def train_step(self, batch: dict) -> dict[str, float]:
        ids, types = batch["input_ids"], batch["token_type_ids"]
        teacher_logits = self.ofa.teacher_forward(ids, token_type_ids=types) if self.distill else None

        def loss_of(subnet: Subnet):
            self.ofa.use(self.configs[subnet.width_mult])
            logits = self.ofa(ids, token_type_ids=types)
            tag = f"w{subnet.width_mult:g}"
            if not self.distill:
                return tag, task_loss(self.task, logits, batch["labels"]), {}
            logit_loss = logit_distillation(self.task, logits, teacher_logits)
            hidden_loss = self.ofa.calc_distill_loss()
            loss = self.args.width_lambda1 * logit_loss + self.args.width_lambda2 * hidden_loss
            return tag, loss, {"logit_loss": logit_loss, "hidden_loss": hidden_loss}

        return self.backward_all(loss_of)

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        self.ofa.use(self.configs[subnet.width_mult])
        return self.model(batch["input_ids"], token_type_ids=batch["token_type_ids"])

    def after_step(self, step: int, log, writer) -> None:
        if self.schedule is None or not self.schedule.due(step):
            return
        heads, neurons = shared_importance(self.ofa, self.importance_loader, self.task)
        counts = graft(self.model, heads, neurons, self.args.graft_alpha, self.args.graft_fraction)
        number = self.schedule.count(step)
        log(f"step {step}: graft #{number}: {counts['heads']} heads and {counts['neurons']} FFN neurons "
            f"received alpha={self.args.graft_alpha:g} of their donors")
        writer.add_scalar("graft/event", number, step)
        writer.add_text("graft", f"graft #{number} at step {step}: {counts}", step)


def shared_importance(ofa: FlexOFA, loader, task: TaskSpec):
    """Head and neuron importance on ``loader``, the same on every rank: one permutation, one graft.

    Importance is a sum over batches, so under data parallel each rank runs its share of the
    batches and the ranks' sums are added (the single-process value up to summation order).
    Its backward runs on the plain model, not through the DataParallel wrapper, so no gradient
    is all-reduced and the ranks may run different numbers of batches (tests/train/test_distributed.py:
    with one importance batch, rank 1 runs none).
    """
    batches = (batch for _, batch in distributed.shard_batches(loader))
    return distributed.sum_over_ranks(*compute_importance(ofa, batches, task))


def run(args: RunArgs) -> StageReport:
    """``--stage width``: supernet, rewiring, all widths per batch (distilled or on labels), grafting."""
    task, tokenizer = start(args)
    holdout = args.importance_holdout if args.importance_data == "holdout" else 0.0
    data = load_task_data(args, task, tokenizer, holdout_fraction=holdout)  # bad data fails first
    student = load_model(args.model_dir, task.num_labels, require_classifier=True)
    importance_loader = data.holdout_loader or next(iter(data.dev_loaders.values()))
    distill = args.distill or args.data_aug
    teacher = load_model(args.model_dir, task.num_labels, require_classifier=True) if distill else None
    if teacher is not None:
        teacher.eval()
    convert_to_supernet(student, args.width_mult_list)
    ofa = FlexOFA(student, teacher, mapping_layers(student))
    rewired = False
    if not (args.resume and checkpoint.exists(args.output_dir)):  # a resumed student is already rewired
        heads, neurons = shared_importance(ofa, importance_loader, task)
        rewire(student, heads, neurons)
        rewired = True
    schedule = None
    if args.graft_during_training:
        steps = total_steps(args, len(data.train_loader))
        global_batch = args.per_gpu_train_batch_size * distributed.world_size() * args.gradient_accumulation_steps
        schedule = default_schedule(data.num_train_examples, global_batch, steps, args.graft_period, args.graft_stop)
        if schedule.count(steps) == 0 and distributed.is_main():
            logger.warning(f"--graft_during_training: no graft will happen: the first is due after step {schedule.period}, "
                           f"grafting stops after step {schedule.stop} of {steps}; set --graft_period or --graft_stop")
    strategy = WidthStrategy(ofa, tokenizer, task, args, importance_loader, schedule)
    result = train(strategy, task, args, data.train_loader, data.dev_loaders)
    return finish(args, task, data, result,
                  {"importance_data": args.importance_data, "rewired_at_start": rewired,
                   "grafts": schedule.count(result.steps) if schedule else 0,
                   "graft_schedule": schedule and vars(schedule)})
