"""Stage ``finetune``: standard task fine-tuning of a pretrained encoder into the teacher.

Cross-entropy on labels (MSE for STS-B), one subnet (the full model).  Its output
directory is the --model_dir of the width stage.
"""
from __future__ import annotations

import paddle

from ofa_flexbert.train import distributed
from ofa_flexbert.config import RunArgs
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.engine.losses import task_loss
from ofa_flexbert.store.models import load_model, save_model
from ofa_flexbert.engine.routes import Subnet
from ofa_flexbert.train.loop import Strategy, train
from .begin import start
from .inputs import check_pooling
from .task_data import load_task_data
from ofa_flexbert.app.report import StageReport, finish


class FinetuneStrategy(Strategy):
    """The full model trained on the task loss."""

    name = "finetune"

    def __init__(self, model: paddle.nn.Layer, tokenizer, task: TaskSpec):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.runner = distributed.data_parallel(model)  # training forwards (gradients averaged over ranks)
        self.subnets = [Subnet(1.0, 1.0)]

    def _logits(self, batch: dict, layer: paddle.nn.Layer) -> paddle.Tensor:
        return layer(batch["input_ids"], token_type_ids=batch["token_type_ids"])

    def train_step(self, batch: dict) -> dict[str, float]:
        loss = task_loss(self.task, self._logits(batch, self.runner), batch["labels"])
        loss.backward()
        return {"loss": float(loss)}

    def logits(self, subnet: Subnet, batch: dict) -> paddle.Tensor:
        return self._logits(batch, self.model)

    def save(self, output_dir: str) -> None:
        save_model(self.model, self.tokenizer, output_dir)


def run(args: RunArgs) -> StageReport:
    """``--stage finetune``: train the task teacher on labels, keeping the best dev checkpoint."""
    task, tokenizer = start(args)
    data = load_task_data(args, task, tokenizer)  # bad data fails before the slow model load
    model = load_model(args.model_dir, task.num_labels)
    model.bert.config.pooling = check_pooling(args)  # saved with the model (config.json)
    result = train(FinetuneStrategy(model, tokenizer, task), task, args, data.train_loader, data.dev_loaders)
    return finish(args, task, data, result)
