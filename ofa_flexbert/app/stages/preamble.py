"""What the stages that evaluate a trained model read before they run: its dev data, the model
itself, and the gates and off-ramps a setting needs (or a one-line refusal)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gate.io import load_gates, load_off_ramps

from ofa_flexbert.adaptive.setting import Plan
from ofa_flexbert.config import RunArgs, task_data_dir
from ofa_flexbert.errors import UserError
from ofa_flexbert.glue.data import encode, make_loader, read_split
from ofa_flexbert.glue.tasks import TaskSpec
from ofa_flexbert.store.models import load_model


@dataclass
class DevData:
    """The task's first dev split: its name, the examples, their encoded rows, and a loader of them."""

    split: str
    examples: list
    dataset: list[dict[str, Any]]
    loader: Any

    @property
    def pairs(self) -> bool:
        """Whether the inputs are sentence pairs."""
        return any(ex.text_b is not None for ex in self.examples)


def dev_data(args: RunArgs, task: TaskSpec, tokenizer) -> DevData:
    """The first dev split, tokenised as training data was, batched at --per_gpu_eval_batch_size."""
    split = task.dev_splits[0]
    examples = read_split(task, task_data_dir(args.data_dir, task.dir_name), split)
    dataset = encode(examples, task, tokenizer, args.max_seq_length)
    return DevData(split, examples, dataset, make_loader(dataset, tokenizer, args.per_gpu_eval_batch_size))


def id_batches(loader) -> list[tuple[np.ndarray, np.ndarray]]:
    """``loader``'s batches as numpy (input ids, token type ids): what an exported graph is fed, so that the
    export's checks and the search's INT8 twins score dev on the batches the engine scored."""
    return [(batch["input_ids"].numpy(), batch["token_type_ids"].numpy()) for batch in loader]


def evaluation_model(model_dir: str, task: TaskSpec, pooling: str):
    """A fresh load of ``model_dir`` with its task classifier (required), its pooling, in eval mode."""
    model = load_model(model_dir, task.num_labels, require_classifier=True)
    model.bert.config.pooling = pooling
    model.eval()
    return model


def decision_modules(model_dir: str, plan: Plan, gates_flag: str, ramps_flag: str):
    """(gates or None, off-ramps or None): what ``plan`` runs, loaded from ``model_dir``; a plan that needs
    gates or off-ramps the directory lacks is refused in one line naming the flag that asked for them."""
    gates = load_gates(model_dir) if plan.gated else None
    if plan.gated and gates is None:
        raise UserError(f"{gates_flag}: {model_dir} has no gates (gates.json); run --stage gate first")
    ramps = load_off_ramps(model_dir) if plan.exits else None
    if plan.exits and (ramps is None or not ramps.layers):
        raise UserError(f"{ramps_flag}: {model_dir} has no off-ramps (off_ramps.json); run --stage gate first")
    return gates, ramps

