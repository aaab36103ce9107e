"""Stages ``depth`` and ``final``: every width x depth subnet trained in each batch.

``depth`` (DynaBERT's second stage with Flexible-BERT's prefix depth): student and teacher
both come from the width-stage output.  The teacher is frozen at full width and depth and runs
once per batch (the reference runs it four times with identical results).  Each subnet's loss is
``depth_lambda1 · soft-CE(logits, teacher) + depth_lambda2 · Σ_j MSE(hidden j, teacher hidden
⌊j/d⌋)`` (losses.teacher_layer_map); labels are not used, as in the reference.

``final`` (the reference's optional final fine-tuning): the task loss on labels over the same
grid, no teacher, no augmentation.  It starts from the input model's score: the input is
evaluated first and copied to --output_dir, and training replaces it only with a better model
(the reference overwrote it at its first evaluation, whatever the score: docs/reference.md, defect §11.5).

A depth-d subnet runs ``routes.depth_layers`` (--depth_rule: prefix, every_other or dynabert).  The
output is a plain BERT directory; depth is chosen at run time.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import paddle

from ofa_flexbert.train import distributed
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.train.diagnostics import first_batches, shallow_depth_check
from ofa_flexbert.errors import UserError
from ofa_flexbert.engine.losses import hidden_distillation, logit_distillation, task_loss, teacher_layer_map
from ofa_flexbert.store.models import freeze, load_model
from ofa_flexbert.store.outputs import SubnetResult, read_eval_results, recorded_depth_rule
from ofa_flexbert.engine.routes import Subnet, depth_for
from ofa_flexbert.train.supernet import FlexOFA, convert_to_supernet
from ofa_flexbert.train.evaluation import evaluate, score
from ofa_flexbert.train.loop import save_best, train
from .begin import start
from .task_data import TaskData, load_task_data
from ofa_flexbert.app.report import StageReport, finish
from ofa_flexbert.train.supernet import SupernetStrategy

logger = logging.getLogger("ofa_flexbert")


class GridStrategy(SupernetStrategy):
    """All (width, depth) subnets per batch, deepest then widest first, gradients summed.

    With a ``teacher``: logit and mapped hidden-state distillation (the depth stage); without:
    the task loss on labels (final fine-tuning).
    """

    def __init__(self, name: str, ofa: FlexOFA, tokenizer, task: TaskSpec, args: RunArgs,
                 teacher: Optional[paddle.nn.Layer] = None):
        self.name, self.ofa, self.tokenizer, self.task, self.args = name, ofa, tokenizer, task, args
        self.model, self.teacher = ofa.model, teacher
        widths = sorted(set(args.width_mult_list), reverse=True)
        depths = sorted(set(args.depth_mult_list), reverse=True)
        self.subnets = [Subnet(w, d) for d in depths for w in widths]
        self.configs = {s: ofa.subnet_config(s.width_mult, s.depth_mult) for s in self.subnets}
        layers = self.model.bert.config.num_hidden_layers
        teacher_layers = teacher.bert.config.num_hidden_layers if teacher is not None else layers
        self.teacher_layers = {d: teacher_layer_map(depth_for(layers, d), teacher_layers, d) for d in depths}

    def _forward(self, subnet: Subnet, batch: dict, hidden: bool = False):
        self.ofa.use(self.configs[subnet])
        return self.ofa(batch["input_ids"], token_type_ids=batch["token_type_ids"], output_hidden_states=hidden)

    def train_step(self, batch: dict) -> dict[str, float]:
        if self.teacher is not None:
            with paddle.no_grad():
                teacher_logits, teacher_hidden = self.teacher(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                                              output_hidden_states=True)

        def loss_of(subnet: Subnet):
            if self.teacher is None:
                return subnet.tag, task_loss(self.task, self._forward(subnet, batch), batch["labels"]), {}
            logits, hidden = self._forward(subnet, batch, hidden=True)
            logit_loss = logit_distillation(self.task, logits, teacher_logits)
            hidden_loss = hidden_distillation(hidden, teacher_hidden, self.teacher_layers[subnet.depth_mult])
            loss = self.args.depth_lambda1 * logit_loss + self.args.depth_lambda2 * hidden_loss
            return subnet.tag, loss, {"logit_loss": logit_loss, "hidden_loss": hidden_loss}

        return self.backward_all(loss_of)

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        return self._forward(subnet, batch)


def check_depth_rule(args: RunArgs) -> None:
    """Refuse a --depth_rule other than the one the input model's depth training used."""
    trained = recorded_depth_rule(args.model_dir)
    if trained and trained != args.depth_rule:
        raise UserError(f"--depth_rule {args.depth_rule}: the model in {args.model_dir} was trained with "
                        f"--depth_rule {trained} (see {os.path.join(args.model_dir, 'flexbert.json')})")


def check_shallow_subnets(args: RunArgs, model: paddle.nn.Layer, data: TaskData) -> dict[str, float]:
    """Warn before training if a depth's subnet would see one [CLS] for every input (diagnostics).

    Uses the inputs (never the labels) of the first dev batches, at least 256 examples.
    Returns each depth's [CLS] spread as a share of full depth's, for flexbert.json.
    """
    batches = first_batches(next(iter(data.dev_loaders.values())))
    shares, warning = shallow_depth_check(model, batches, args.depth_mult_list, args.depth_rule,
                                          args.balance_subnet_gradients)
    if warning and distributed.is_main():
        logger.warning(warning)
    return {f"{d:g}": round(share, 4) for d, share in shares.items()}


def _student(args: RunArgs, task: TaskSpec) -> FlexOFA:
    student = load_model(args.model_dir, task.num_labels, require_classifier=True)
    convert_to_supernet(student, args.width_mult_list)
    return FlexOFA(student, depth_mult_list=args.depth_mult_list, depth_rule=args.depth_rule)


def run_depth(args: RunArgs) -> StageReport:
    """``--stage depth``: every width x depth subnet per batch, distilled from the frozen full input model."""
    task, tokenizer = start(args)
    check_depth_rule(args)
    data = load_task_data(args, task, tokenizer)
    ofa = _student(args, task)
    teacher = freeze(load_model(args.model_dir, task.num_labels, require_classifier=True))
    shares = check_shallow_subnets(args, teacher, data)
    strategy = GridStrategy("depth", ofa, tokenizer, task, args, teacher)
    result = train(strategy, task, args, data.train_loader, data.dev_loaders)
    return finish(args, task, data, result, {"depth_rule": args.depth_rule, "cls_spread_share": shares})


def run_final(args: RunArgs) -> StageReport:
    """``--stage final``: labels only, over all subnets; replaces the input model only if it does better."""
    if args.data_aug:
        raise UserError("--data_aug: final fine-tuning trains on the original training data only (as the "
                        "reference does); drop the flag")
    task, tokenizer = start(args)
    check_depth_rule(args)
    data = load_task_data(args, task, tokenizer)
    strategy = GridStrategy("final", _student(args, task), tokenizer, task, args)
    initial, input_results = None, None
    if not args.resume:  # the input is the model to beat; the output starts as a copy of it
        input_results = evaluate(strategy, task, data.dev_loaders)
        initial = score(input_results, task.primary_metric)
        if distributed.is_main():
            save_best(strategy, task, args, input_results, 0)
    result = train(strategy, task, args, data.train_loader, data.dev_loaders,
                   initial_best=initial if initial is not None else float("-inf"))
    if result.best_step is None:  # nothing beat the input: the output is still its copy (step 0)
        if input_results is None:  # resumed: the copy was scored by the interrupted process
            input_results = [SubnetResult(**s) for s in read_eval_results(args.output_dir)["subnets"]]
        result.best_step, result.best_results = 0, input_results
    extra = {"depth_rule": args.depth_rule, "kept_input_model": result.best_step == 0}
    if initial is not None:
        extra["input_score"] = initial
    return finish(args, task, data, result, extra)
