"""The GLUE task table: names, folders, labels, metrics and file layouts -- pure data, no paddle.

Why its own module: the configuration (task names in flags and YAML), the metrics and the
predictor need the table without the readers' and loaders' paddle imports; the readers in
``data.py`` use it for where each field lives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ofa_flexbert.errors import UserError

LAST = -1  # column index meaning "the last column of the row" (label of MNLI, QNLI, RTE, ...)


# --------------------------------------------------------------------------------------------
# Task specifications
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the fields of one kind of GLUE file live (0-based column indices).

    ``label_col`` is ``None`` for unlabelled (test) files and :data:`LAST` (-1) when the label is
    the last column -- MNLI dev files carry five annotator columns before ``gold_label``, so the
    label's index differs between train and dev, but it is always last.
    """

    text_cols: tuple[int, ...]  # one (single sentence) or two (sentence pair) columns
    label_col: Optional[int]
    header: bool  # skip the first line

    @property
    def min_columns(self) -> int:
        """Fewest tab-separated columns a row must have to hold every field.

        A "last column" label must come after the texts, otherwise a short row would read a
        sentence as its label.
        """
        highest = max(self.text_cols)
        if self.label_col is None:
            return highest + 1
        if self.label_col == LAST:
            return highest + 2
        return max(highest, self.label_col) + 1


@dataclass(frozen=True)
class TaskSpec:
    """Everything the rest of the toolkit needs to know about one GLUE task."""

    name: str  # canonical: 'cola', 'sst-2', 'mrpc', 'sts-b', 'qqp', 'mnli', 'qnli', 'rte', 'wnli'
    dir_name: str  # folder under $GLUE_DIR: 'CoLA', 'SST-2', ...
    labels: Optional[tuple[str, ...]]  # None = regression (STS-B)
    metrics: tuple[str, ...]  # keys compute_metrics returns, primary (checkpoint-selection) first
    dev_splits: tuple[str, ...]  # ('dev',) or, for MNLI, ('dev_matched', 'dev_mismatched')
    layout: Layout  # train.tsv / dev*.tsv / augmented files
    test_layout: Layout  # test*.tsv (no labels)
    test_splits: tuple[str, ...] = ("test",)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Size of the classifier head: 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_ACC = ("acc",)
_ACC_F1 = ("acc", "f1", "acc_and_f1")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # CoLA train/dev have no header: source, label, original_mark, sentence.
        TaskSpec("cola", "CoLA", _BINARY, ("mcc",), ("dev",),
                 Layout((3,), 1, header=False), Layout((1,), None, header=True)),
        TaskSpec("sst-2", "SST-2", _BINARY, _ACC, ("dev",),
                 Layout((0,), 1, header=True), Layout((1,), None, header=True)),
        # Quality, #1 ID, #2 ID, #1 String, #2 String (test: index instead of Quality).
        TaskSpec("mrpc", "MRPC", _BINARY, _ACC_F1, ("dev",),
                 Layout((3, 4), 0, header=True), Layout((3, 4), None, header=True)),
        TaskSpec("sts-b", "STS-B", None, ("pearson", "spearman", "corr"), ("dev",),
                 Layout((7, 8), LAST, header=True), Layout((7, 8), None, header=True)),
        # id, qid1, qid2, question1, question2, is_duplicate (test: id, question1, question2).
        TaskSpec("qqp", "QQP", _BINARY, _ACC_F1, ("dev",),
                 Layout((3, 4), 5, header=True), Layout((1, 2), None, header=True)),
        TaskSpec("mnli", "MNLI", ("contradiction", "entailment", "neutral"), _ACC,
                 ("dev_matched", "dev_mismatched"),
                 Layout((8, 9), LAST, header=True), Layout((8, 9), None, header=True),
                 test_splits=("test_matched", "test_mismatched")),
        TaskSpec("qnli", "QNLI", _NLI2, _ACC, ("dev",),
                 Layout((1, 2), LAST, header=True), Layout((1, 2), None, header=True)),
        TaskSpec("rte", "RTE", _NLI2, _ACC, ("dev",),
                 Layout((1, 2), LAST, header=True), Layout((1, 2), None, header=True)),
        TaskSpec("wnli", "WNLI", _BINARY, _ACC, ("dev",),
                 Layout((1, 2), LAST, header=True), Layout((1, 2), None, header=True)),
    )
}

# Spellings accepted by get_task, after lower-casing and dropping '-' and '_'.
_ALIASES = {name.replace("-", ""): name for name in TASKS}


def get_task(name: str) -> TaskSpec:
    """Look a task up case-insensitively; 'sst2'/'sst-2' and 'stsb'/'sts-b' both work."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key in _ALIASES:
        return TASKS[_ALIASES[key]]
    raise UserError(f"unknown task '{name}'; expected one of: {', '.join(TASKS)}")
