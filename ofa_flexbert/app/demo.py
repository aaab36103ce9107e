"""``--demo``: the whole pipeline offline, in minutes, on a task and a model it makes itself.

The synthetic task ("toy sentiment") is in GLUE's SST-2 layout.  A sentence holds 1, 3
or 5 sentiment words among fillers; a word preceded by "not" flips its polarity; the label
is the sign of the sum.  It is learnable (a rule over a few tokens) but not trivial: the
model must pair each "not" with the next sentiment word and count, which takes attention
capacity -- so narrower and shallower subnets visibly score lower.  The tiny BERT (its own
23-word vocabulary, 4 layers, 4 heads, hidden 64) starts from random weights.
"""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Optional

from ofa_flexbert.app.console import quiet_libraries
from ofa_flexbert.config import CONFIG_DIR, resolve
from ofa_flexbert.deploy.predictor import Predictor
from ofa_flexbert.store.atomic import write_json

from .report import StageReport
from .stages import resolve_stages, run_stage
from .stages.output_dir import check_fresh

POSITIVE = ("good", "great", "fine", "nice", "superb", "lovely")
NEGATIVE = ("bad", "awful", "poor", "dull", "grim", "weak")
FILLERS = ("the", "a", "movie", "plot", "actor", "was", "and", "it", "is", "story")
NEGATION = "not"
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB = SPECIAL + FILLERS + (NEGATION,) + POSITIVE + NEGATIVE
DEMO_CONFIG = os.path.join(CONFIG_DIR, "demo.yaml")
# What the demo deploys at the end: one subnet of the final model, and raw sentences for its predictor.
DEMO_EXPORT = {"width_mult": [0.5], "depth_mult": [0.75]}
DEMO_SENTENCES = ("a superb movie", "the plot was not good", "not bad and it was great",
                  "the story was dull and the actor was weak")
# Left in a demo's folder: a second --demo into it replaces the first without --overwrite_output_dir,
# while a folder without it (someone's real runs) is refused as every stage refuses it.
DEMO_MARKER = "demo.json"


def synthetic_example(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label (1 = positive)."""
    words, total = [], 0
    for _ in range(rng.choice((1, 3, 5))):
        words.extend(rng.choice(FILLERS) for _ in range(rng.randint(0, 3)))
        positive = rng.random() < 0.5
        negated = rng.random() < 0.4
        if negated:
            words.append(NEGATION)
        words.append(rng.choice(POSITIVE if positive else NEGATIVE))
        total += 1 if positive != negated else -1
    words.extend(rng.choice(FILLERS) for _ in range(rng.randint(0, 2)))
    return " ".join(words), int(total > 0)


def write_synthetic_task(data_dir: str, seed: int = 0, num_train: int = 3000, num_dev: int = 600) -> None:
    """train.tsv and dev.tsv in SST-2 layout (header ``sentence<TAB>label``)."""
    from ofa_flexbert.store.atomic import write_text

    rng = random.Random(seed)
    for split, count in (("train", num_train), ("dev", num_dev)):
        rows = ["sentence\tlabel"] + ["%s\t%d" % synthetic_example(rng) for _ in range(count)]
        write_text(os.path.join(data_dir, f"{split}.tsv"), "\n".join(rows) + "\n")


def write_tiny_bert(model_dir: str, seed: int = 0, max_positions: int = 64) -> None:
    """A randomly initialised tiny BERT classifier with the demo vocabulary, saved as a model dir
    (``max_positions``: the longest input it takes, 64 for the demo's short sentences)."""
    import paddle
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from ofa_flexbert.store.models import save_model
    from ofa_flexbert.store.atomic import write_text

    os.makedirs(model_dir, exist_ok=True)
    vocab_path = os.path.join(model_dir, "vocab.txt")
    write_text(vocab_path, "\n".join(VOCAB) + "\n")
    paddle.seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=max_positions, type_vocab_size=2, num_labels=2)
    save_model(BertForSequenceClassification(config), BertTokenizer(vocab_path), model_dir)


def run_demo(output_dir: str, seed: int = 0, extra_flags: Optional[dict] = None) -> list[StageReport]:
    """Make the task and model under ``output_dir``, run every training and adaptive stage, then deploy:
    export one subnet of the final model and label :data:`DEMO_SENTENCES` with its Predictor.

    The flags are validated first, so a bad one leaves ``output_dir`` untouched.  A folder an earlier
    demo wrote (:data:`DEMO_MARKER`) is simply written again.
    """
    data_dir = os.path.join(output_dir, "data", "SST-2")
    model_dir = os.path.join(output_dir, "pretrained")
    flags = {"task": "sst-2", "stage": "all", "config": DEMO_CONFIG, "data_dir": data_dir,
             "model_dir": model_dir, "output_dir": output_dir, "seed": seed,
             "overwrite_output_dir": os.path.isfile(os.path.join(output_dir, DEMO_MARKER))}
    flags.update(extra_flags or {})
    chain = resolve_stages(flags)
    export = resolve({**flags, **DEMO_EXPORT, "stage": "export", "model_dir": os.path.join(output_dir, "final"),
                      "output_dir": os.path.join(output_dir, "export")})
    check_fresh(export)
    write_json(os.path.join(output_dir, DEMO_MARKER), {"demo": True, "seed": seed})
    quiet_libraries(chain[0].verbose)  # saving the tiny BERT would print PaddleNLP's lines
    write_synthetic_task(data_dir, seed)
    write_tiny_bert(model_dir, seed)
    reports = [run_stage(args) for args in chain]
    exported = run_stage(export)
    predictor = Predictor(exported.exports[0]["path"])
    samples = [(text, p.label, p.probabilities[p.label]) for text, p in zip(DEMO_SENTENCES, predictor.predict(DEMO_SENTENCES))]
    return reports + [dataclasses.replace(exported, samples=samples)]
