"""Stage ``finetune``: standard task fine-tuning of a pretrained encoder into the teacher.

Cross-entropy on labels (MSE for STS-B), one subnet (the full model).  Its output
directory is the --model_dir of the width stage.
"""
from __future__ import annotations

import paddle

from ..config import RunArgs, to_dict
from ..data import TaskSpec
from ..losses import task_loss
from ..models import load_model, load_tokenizer, save_model
from ..outputs import write_run_info
from ..training import Subnet, train
from .common import StageReport, check_output_dir, load_task_data, require, setup


class FinetuneStrategy:
    """The full model trained on the task loss."""

    name = "finetune"

    def __init__(self, model: paddle.nn.Layer, tokenizer, task: TaskSpec):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.subnets = [Subnet(1.0, 1.0)]

    def _logits(self, batch: dict) -> paddle.Tensor:
        return self.model(batch["input_ids"], token_type_ids=batch["token_type_ids"])

    def train_step(self, batch: dict) -> dict[str, float]:
        loss = task_loss(self.task, self._logits(batch), batch["labels"])
        loss.backward()
        return {"loss": float(loss)}

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        return self._logits(batch)

    def save(self, output_dir: str) -> None:
        save_model(self.model, self.tokenizer, output_dir)


def run(args: RunArgs) -> StageReport:
    require(args, "model_dir", "output_dir")
    task = setup(args)
    check_output_dir(args)
    tokenizer = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, task.num_labels)
    data = load_task_data(args, task, tokenizer)
    strategy = FinetuneStrategy(model, tokenizer, task)
    result = train(strategy, task, args, data.train_loader, data.dev_loaders, args.output_dir)
    write_run_info(args.output_dir, "finetune", task.name, to_dict(args), args.model_dir,
                   {"best_step": result.best_step, "train_examples": data.num_train_examples,
                    "steps": result.steps, "seconds": round(result.seconds, 1)})
    return StageReport("finetune", task.name, args.output_dir, task.primary_metric, result.best_results,
                       result.best_step, result.seconds)
