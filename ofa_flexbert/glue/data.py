"""GLUE readers, tokenisation and deterministic batching.

Why hand-written readers: PaddleNLP's ``load_dataset('glue', ...)`` downloads (and md5-checks)
the data, so it cannot run offline, and it knows nothing about the augmented training files of
TinyBERT / the Flexible-BERT reference.  The readers here follow the official GLUE TSV layouts:

* ``csv`` with ``delimiter='\\t'`` and ``quoting=csv.QUOTE_NONE``: GLUE files are *not* CSV-quoted.
  Quote characters are literal text (MRPC dev.tsv line 2 has an unbalanced ``"``); a quoting
  reader would silently glue the following lines into one field.
* ``encoding='utf-8-sig'``: MRPC train.tsv / dev.tsv start with a byte-order mark, which would
  otherwise become part of the first header cell (harmless) or, for header-less CoLA-style files,
  of the first field.
* Every bad input raises :class:`~ofa_flexbert.errors.UserError` with a one-line message that
  names the file (and 1-based line), what was found and what was expected.

Tokenisation happens once, up front (:func:`encode`), without padding; :func:`make_loader` pads
each batch to its own longest sequence, and :class:`EpochBatchSampler` makes the batch order a
pure function of ``(seed, epoch)`` so that a resumed run replays the exact same batches.

About 420 lines, by choice: the nine tasks' file layouts, the augmented files and batching are read
by one set of functions sharing one error style; the task table itself is ``glue/tasks.py``.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import paddle

from ofa_flexbert.errors import UserError
from .tasks import LAST, TASKS, Layout, TaskSpec, get_task  # noqa: F401  -- re-exported for the readers' callers

__all__ = [
    "Layout",
    "TaskSpec",
    "TASKS",
    "get_task",
    "Example",
    "read_split",
    "read_augmented",
    "encode",
    "EpochBatchSampler",
    "make_loader",
]

# Show a progress bar when tokenising more examples than this (a few seconds of work and up).
_TQDM_THRESHOLD = 2000

# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One GLUE row: the text(s) verbatim, and the label as the model sees it."""

    text_a: str
    text_b: Optional[str]
    label: Union[int, float, None]  # index into TaskSpec.labels; float for STS-B; None for test


def _raise_field_size_limit() -> None:
    """Allow arbitrarily long fields: csv's default 128 KiB cap is a limit of the module, not
    of the data (MNLI parse-tree columns get long), and QUOTE_NONE keeps fields within a line."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32 bits on some platforms
            limit //= 2


def _bad_utf8_line(path: str) -> int:
    """1-based number of the first line that is not valid UTF-8 (only run on the error path,
    because the text decoder reads ahead in chunks and cannot say which line failed)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


def _rows(path: str, header: bool, what: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(1-based line number, fields)`` for the data rows of a GLUE TSV file.

    Completely empty lines (e.g. a trailing blank line) hold no example and are skipped.
    """
    _raise_field_size_limit()
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in reader:
                # QUOTE_NONE: one record per physical line, so line_num is the 1-based line.
                if header and reader.line_num == 1:
                    continue
                if not row:
                    continue
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise UserError(f"{path}:{_bad_utf8_line(path)}: not valid UTF-8 text") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def _label_error(path: str, lineno: int, value: str, task: TaskSpec, allow_logits: bool) -> UserError:
    expected = ", ".join(task.labels)
    if allow_logits:
        expected += f", or {task.num_labels} space-separated logits"
    return UserError(f"{path}:{lineno}: unknown label '{value}' for task {task.name}; "
                     f"expected one of: {expected}")


def _parse_label(value: str, task: TaskSpec, path: str, lineno: int,
                 allow_logits: bool) -> Union[int, float]:
    """Turn a label cell into a class index (or a float score for regression).

    With ``allow_logits`` (augmented files) the cell may also hold teacher logits as a
    space-separated string, as written by the Flexible-BERT reference; the label is their argmax.
    A plain label is tried first: logits always have ``num_labels >= 2`` tokens, so the two
    readings never collide.
    """
    value = value.strip()
    if task.labels is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise UserError(f"{path}:{lineno}: expected a finite float score in the last column "
                            f"for task {task.name}, found '{value}'")
        return score
    if value in task.labels:
        return task.labels.index(value)
    if allow_logits:
        parts = value.split()
        if len(parts) == task.num_labels:
            try:
                logits = np.array([float(p) for p in parts], dtype=np.float64)
            except ValueError:
                logits = None
            if logits is not None and np.all(np.isfinite(logits)):
                return int(np.argmax(logits))
    raise _label_error(path, lineno, value, task, allow_logits)


def _read(task: TaskSpec, path: str, layout: Layout, what: str,
          allow_logits: bool = False) -> list[Example]:
    need = layout.min_columns
    examples: list[Example] = []
    for lineno, row in _rows(path, layout.header, what):
        if len(row) < need:
            raise UserError(f"{path}:{lineno}: expected at least {need} tab-separated columns, "
                            f"found {len(row)}")
        text_a = row[layout.text_cols[0]]
        text_b = row[layout.text_cols[1]] if len(layout.text_cols) > 1 else None
        label = None
        if layout.label_col is not None:
            label = _parse_label(row[layout.label_col], task, path, lineno, allow_logits)
        examples.append(Example(text_a, text_b, label))
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def _split_file(task: TaskSpec, split: str) -> tuple[str, bool]:
    """Map a split name to ``(file stem, is_test)``; MNLI's plain 'dev'/'test' mean 'matched'."""
    split = str(split).strip().lower()
    if split == "train":
        return "train", False
    if split == "dev" or split in task.dev_splits:
        return (task.dev_splits[0] if split == "dev" else split), False
    if split == "test" or split in task.test_splits:
        return (task.test_splits[0] if split == "test" else split), True
    choices = ["train", *dict.fromkeys(("dev", *task.dev_splits, "test", *task.test_splits))]
    raise UserError(f"unknown split '{split}' for task {task.name}; "
                    f"expected one of: {', '.join(choices)}")


def read_split(task: TaskSpec, data_dir: str, split: str) -> list[Example]:
    """Read ``<data_dir>/<split>.tsv`` of ``task``; ``data_dir`` is the task folder itself.

    ``split`` is 'train', 'dev' or 'test' (MNLI: 'dev_matched' / 'dev_mismatched', with 'dev'
    meaning matched; likewise 'test' means 'test_matched').  Test rows have ``label=None``.
    """
    stem, is_test = _split_file(task, split)
    path = os.path.join(data_dir, f"{stem}.tsv")
    layout = task.test_layout if is_test else task.layout
    return _read(task, path, layout, f"the GLUE {task.dir_name} {stem} split")


def augmented_paths(task: TaskSpec, data_dir: str) -> tuple[str, str]:
    """The two augmented-data file names, in order of preference."""
    return (os.path.join(data_dir, "train_aug.tsv"),
            os.path.join(data_dir, f"train_{task.dir_name}_aug_with_logits.tsv"))


def read_augmented(task: TaskSpec, data_dir: str) -> list[Example]:
    """Read augmented training data: ``train_aug.tsv`` (TinyBERT's output, train.tsv layout) if
    present, else the reference's ``train_<DIRNAME>_aug_with_logits.tsv``.

    Both use the train layout.  The label cell may hold a plain label or teacher logits (a
    space-separated string, labelled by their argmax); STS-B holds a float score.
    """
    for path in augmented_paths(task, data_dir):
        if os.path.exists(path):
            return _read(task, path, task.layout, f"augmented {task.dir_name} training data",
                         allow_logits=True)
    first, second = augmented_paths(task, data_dir)
    raise UserError(f"no augmented training data for task {task.name}: "
                    f"neither {first} nor {second} exists")


# --------------------------------------------------------------------------------------------
# Tokenisation and batching
# --------------------------------------------------------------------------------------------


def encode(examples: list[Example], task: TaskSpec, tokenizer, max_seq_length: int):
    """Tokenise every example once, up front, into a ``paddlenlp.datasets.MapDataset``.

    Rows are ``{'input_ids', 'token_type_ids', 'labels'}`` (``labels`` is omitted when the
    examples are unlabelled test rows, since the collator cannot stack ``None``).  Nothing is
    padded here: :func:`make_loader` pads each batch to its own longest row, which is much
    cheaper than padding everything to ``max_seq_length``.
    """
    from paddlenlp.datasets import MapDataset
    from tqdm import tqdm

    pair = any(ex.text_b is not None for ex in examples)
    # The tokenizer only *logs* an error and returns the untruncated sequence when the special
    # tokens alone fill max_length, so refuse such lengths up front.
    minimum = tokenizer.num_special_tokens_to_add(pair=pair) + 1
    if not isinstance(max_seq_length, int) or max_seq_length < minimum:
        raise UserError(f"max_seq_length must be an integer >= {minimum} for task {task.name} "
                        f"(special tokens plus one word piece), got {max_seq_length!r}")
    labelled = [ex.label is not None for ex in examples]
    if any(labelled) and not all(labelled):
        raise ValueError("encode() got a mix of labelled and unlabelled examples")

    rows = []
    bar = tqdm(examples, desc=f"tokenising {task.dir_name}", unit="ex",
               disable=len(examples) <= _TQDM_THRESHOLD, leave=False)
    with warnings.catch_warnings():
        # Emitted for every truncated pair although we never ask for overflowing tokens.
        warnings.filterwarnings("ignore", message="Be aware, overflowing tokens are not returned")
        encoded = [tokenizer(ex.text_a, text_pair=ex.text_b, max_length=max_seq_length,
                             truncation=True) for ex in bar]
    for ex, enc in zip(examples, encoded):
        input_ids = list(enc["input_ids"])
        if len(input_ids) > max_seq_length:  # the tokenizer's silent failure mode, see above
            raise RuntimeError(f"tokenizer returned {len(input_ids)} ids for max_length "
                               f"{max_seq_length}")
        row = {"input_ids": input_ids, "token_type_ids": list(enc["token_type_ids"])}
        if ex.label is not None:
            row["labels"] = float(ex.label) if task.is_regression else int(ex.label)
        rows.append(row)
    return MapDataset(rows)


def batches_per_epoch(num_examples: int, global_batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one epoch: the last, smaller batch counts unless ``drop_last``.

    Benchmarks that schedule evaluations per epoch ask this rather than redo the arithmetic.
    """
    if drop_last:
        return num_examples // global_batch_size
    return -(-num_examples // global_batch_size)


# --group_by_length sorts within pools of this many global batches: large enough that a pool's
# batches are close in length, small enough that the batch order stays random (HuggingFace's
# LengthGroupedSampler uses mega-batches of 50 as well).
POOL_BATCHES = 50


class EpochBatchSampler(paddle.io.BatchSampler):
    """Batches whose order is a pure function of ``(seed, epoch)``.

    Paddle's own samplers draw from the global RNG, so a run resumed from a checkpoint could
    not replay the batches it was in the middle of.  Here epoch ``e`` visits
    ``np.random.RandomState(seed + e).permutation(n)`` (or ``range(n)`` without shuffling);
    call :meth:`set_epoch` before iterating each epoch.

    Data parallel (``world_size`` > 1): every rank walks the same order in *global* batches of
    ``batch_size x world_size`` examples and yields its own contiguous slice (rank r gets the
    r-th), so a step on N ranks sees exactly the examples of one single-process step with an
    N-times larger batch, and ``len()`` counts global steps.  A short last global batch is
    split as evenly as possible; if it has fewer examples than ranks, it is topped up from the
    start of the epoch's order so that no rank gets an empty batch.  (Paddle's
    ``DistributedBatchSampler`` interleaves ranks and seeds its shuffle with the epoch alone,
    ignoring the run's seed.)

    ``lengths`` (``--group_by_length``): the epoch's order is cut into pools of
    :data:`POOL_BATCHES` global batches, each pool is sorted by token count (longest first,
    ties in visiting order) and cut into batches, and the batches are shuffled (all but a short
    last one, which stays last) with the same ``(seed, epoch)`` generator.  Batches then hold
    sentences of similar length, so dynamic padding pads little, while every example is still
    visited once per epoch in an order that is a pure function of ``(seed, epoch)``.

    ``paddle.io.BatchSampler.__init__`` is deliberately not called: it insists on a dataset or
    sampler and builds a global-RNG sampler we don't want.  The attributes Paddle's DataLoader
    reads (``batch_size``, ``drop_last``, ``shuffle``) are set here.
    """

    def __init__(self, num_examples: int, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 lengths: Optional[Sequence[int]] = None) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples}")
        self.num_examples = int(num_examples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        if lengths is not None and len(lengths) != num_examples:
            raise ValueError(f"lengths has {len(lengths)} entries for {num_examples} examples")
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> list[list[int]]:
        """The current epoch's global batches (``batch_size x world_size`` indices; the last may be short)."""
        rng = np.random.RandomState(self.seed + self.epoch)
        order = rng.permutation(self.num_examples) if self.shuffle else np.arange(self.num_examples)
        size = self.batch_size * self.world_size
        if self.lengths is None:
            return [order[i:i + size].tolist() for i in range(0, self.num_examples, size)]
        batches = []
        pool = size * POOL_BATCHES
        for start in range(0, self.num_examples, pool):
            chunk = order[start:start + pool]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + size].tolist() for i in range(0, len(chunk), size)]
        short = batches[-1:] if batches and len(batches[-1]) < size else []
        full = batches[:len(batches) - len(short)]
        if self.shuffle:
            full = [full[i] for i in rng.permutation(len(full))]
        return full + short

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        first = [i for batch in batches for i in batch][:self.world_size]
        for batch in batches:
            if len(batch) < self.batch_size * self.world_size:
                if self.drop_last:
                    return
                batch = batch + first[:max(0, self.world_size - len(batch))]  # one example per rank at least
            yield [int(i) for i in np.array_split(batch, self.world_size)[self.rank]]

    def __len__(self) -> int:
        """Batches per epoch: global steps, the same on every rank."""
        return batches_per_epoch(self.num_examples, self.batch_size * self.world_size, self.drop_last)


class _Collate:
    """``DataCollatorWithPadding`` plus a guaranteed ``labels`` dtype.

    The collator builds tensors with ``paddle.to_tensor``, which (verified on paddle 2.6.2 and
    3.3.1) already gives int64 for int labels and float32 for python floats; the cast only
    pins that contract (CrossEntropyLoss wants int64, MSELoss float32) against future changes.
    """

    def __init__(self, tokenizer, regression: Optional[bool]) -> None:
        from paddlenlp.data import DataCollatorWithPadding

        self.collator = DataCollatorWithPadding(tokenizer, padding=True, return_tensors="pd")
        self.regression = regression

    def __call__(self, features):
        batch = self.collator(features)
        if "labels" in batch and self.regression is not None:
            want = paddle.float32 if self.regression else paddle.int64
            if batch["labels"].dtype != want:
                batch["labels"] = batch["labels"].astype(want)
        return batch


def _is_regression(dataset) -> Optional[bool]:
    """Whether the dataset's labels are float scores (None: unlabelled or empty)."""
    if len(dataset) == 0 or "labels" not in dataset[0]:
        return None
    return isinstance(dataset[0]["labels"], float)


def make_loader(dataset, tokenizer, batch_size: int, shuffle: bool = False,
                seed: int = 0, rank: int = 0, world_size: int = 1,
                group_by_length: bool = False) -> paddle.io.DataLoader:
    """A DataLoader over an :func:`encode`-d dataset with dynamic padding.

    Each batch is padded to its own longest sequence (truncation already happened in
    :func:`encode`).  The :class:`EpochBatchSampler` is ``loader.batch_sampler``; call its
    ``set_epoch`` before each epoch.  ``labels`` is int64 ``[B]`` (classification) or float32
    ``[B]`` (regression).  ``rank``/``world_size`` shard it for data parallel training;
    ``group_by_length`` batches examples of similar token counts (:class:`EpochBatchSampler`).
    """
    lengths = [len(row["input_ids"]) for row in dataset] if group_by_length else None
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, rank=rank,
                                world_size=world_size, lengths=lengths)
    return paddle.io.DataLoader(dataset, batch_sampler=sampler,
                                collate_fn=_Collate(tokenizer, _is_regression(dataset)),
                                num_workers=0)
