"""Predict labels for raw text with a model written by ``--stage export``, on Paddle Inference.

    from ofa_flexbert import Predictor
    predictor = Predictor("export/w0.5_d0.75")
    predictor.predict(["a gripping, funny film"])          # single sentences
    predictor.predict(["He left."], pairs=["He is gone."])  # sentence pairs (MRPC, RTE, ...)

Text is tokenised with the tokenizer saved beside the model, truncated to the model's
``max_seq_length`` exactly as training data was (``tokenizer.WordPieceTokenizer``: PaddleNLP's rules
without importing PaddleNLP), batched by length and padded; the static graph reads padding from the
pad id, so a row's result does not depend on its batch.  A predictor process imports neither PaddleNLP
nor PaddleSlim, and one on onnxruntime not even paddle (tested in a fresh process).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from ofa_flexbert.glue.tasks import get_task
from ofa_flexbert.errors import UserError
from .grouping import length_groups
from .layout import read_manifest
from .runtime import RUNTIMES, StaticGraph


@dataclass(frozen=True)
class Prediction:
    """One input's answer: the label (a score for regression) and, for classification, each label's probability;
    for a dynamic or cascade export also what the input ran (``route.executed``: its (layer, width) steps)
    and its MACs at its length."""

    label: Union[str, float]
    probabilities: Optional[dict[str, float]]
    route: Any = None
    macs: Optional[int] = None


class Predictor:
    """Labels and probabilities for raw text from an export directory (``--stage export``).

    ``runtime`` is ``paddle`` (Paddle Inference, the model.json/model.pdmodel graph) or ``onnx``
    (onnxruntime, the model.onnx that ``--format onnx`` adds); both get the same inputs by name.  None: the
    runtime the manifest names (an INT8 export's ``onnx``), else ``paddle``.
    """

    def __init__(self, export_dir: str, num_threads: int = 1, onednn: bool = True, batch_size: int = 32,
                 runtime: Optional[str] = None):
        from .tokenizer import WordPieceTokenizer

        self.export_dir = export_dir
        self.manifest = read_manifest(export_dir)
        only = self.manifest.get("runtime")  # an INT8 export holds a model for onnxruntime only
        runtime = runtime or only or "paddle"
        if runtime not in RUNTIMES:
            raise UserError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if only is not None and runtime != only:
            mode = self.manifest.get("quantization", {}).get("mode", "").upper() or "this"
            raise UserError(f"--runtime {runtime}: --export_dir {export_dir} is an {mode} export, for --runtime "
                            f"{only} only")
        self.task = get_task(self.manifest["task"])
        self.batch_size = batch_size
        self.runtime = runtime
        self.tokenizer = WordPieceTokenizer(export_dir)
        self.dynamic = None  # a runner of routes: .run(ids, types) -> (logits, per-row route), .macs(route, length)
        kind = self.manifest.get("kind")
        if kind == "dynamic" and runtime != "paddle":
            raise UserError(f"--runtime {runtime}: a {self.manifest['tag']} export of per-layer graphs runs on "
                            "Paddle Inference only")
        if kind == "segments":  # gates and exits inside the graphs of the runs of layers between them
            from .segment_predictor import SegmentPredictor

            self.dynamic = SegmentPredictor(export_dir, self.manifest, num_threads, onednn, runtime)
        elif kind == "dynamic":  # gates and exits in dygraph between per-layer graphs on Paddle Inference
            from .dynamic_predictor import DynamicPredictor

            self.dynamic = DynamicPredictor(export_dir, self.manifest, num_threads, onednn)
        elif kind == "cascade":  # static subnets in turn, each on the runtime asked for
            from .cascade_predictor import CascadePredictor

            self.dynamic = CascadePredictor(export_dir, self.manifest, num_threads, onednn, runtime,
                                            self.tokenizer.pad_token_id)
        else:
            self._graph = StaticGraph(export_dir, num_threads, onednn, runtime)

    @property
    def takes_pairs(self) -> bool:
        """Whether the model was trained on sentence pairs (recorded at export)."""
        return bool(self.manifest.get("text_pair"))

    def logits(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """[B, C] logits for one padded batch of int64 [B, T] ids."""
        if self.dynamic is not None:
            return self.dynamic.run(input_ids, token_type_ids)[0]
        return self._graph(input_ids, token_type_ids)

    def encode(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> list[dict]:
        """Token ids of each input, truncated as the model's training data was."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        return self.tokenizer.encode(texts, pairs, int(self.manifest["max_seq_length"]))

    def pad(self, chunk: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        """One padded ``(input_ids, token_type_ids)`` batch of encoded rows (pad id, type 0)."""
        width = max(len(r["input_ids"]) for r in chunk)
        ids = np.full((len(chunk), width), self.tokenizer.pad_token_id, dtype="int64")
        types = np.zeros((len(chunk), width), dtype="int64")
        for i, row in enumerate(chunk):
            ids[i, :len(row["input_ids"])] = row["input_ids"]
            types[i, :len(row["token_type_ids"])] = row["token_type_ids"]
        return ids, types

    def run(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list]:
        """[N, C] logits, and for a dynamic or cascade export each input's (route, MACs at its length) --
        what ``--stage infer`` reports per input; an empty list for a static export (one route for all).

        Inputs run in batches of similar length (:func:`grouping.length_groups`, at most :attr:`batch_size`
        rows) and come back in the order given; a float export's row does not depend on its batch (an INT8
        export's may a little: its activations are scaled per batch)."""
        rows = self.encode(texts, pairs)
        lengths = [len(r["input_ids"]) for r in rows]
        logits = np.zeros((len(rows), self.task.num_labels), dtype="float32")
        routes: list = [None] * len(rows)
        for group in length_groups(lengths, self.batch_size):
            ids, types = self.pad([rows[i] for i in group])
            if self.dynamic is None:
                logits[group] = self.logits(ids, types)
                continue
            logits[group], taken = self.dynamic.run(ids, types)
            for i, route in zip(group, taken):
                routes[i] = (route, self.dynamic.macs(route, lengths[i]))
        return logits, (routes if self.dynamic is not None else [])

    def predict_logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """[N, C] logits of the inputs (empty input: [0, C])."""
        return self.run(texts, pairs)[0]

    def predict(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> list[Prediction]:
        """A :class:`Prediction` per input: the argmax label and softmax probabilities (regression: the score),
        and for a dynamic or cascade export each input's route and MACs."""
        return self.predictions(*self.run(texts, pairs))

    def predictions(self, logits: np.ndarray, routes: Sequence[tuple] = ()) -> list[Prediction]:
        """:class:`Prediction` s of logits [N, C] and, from :meth:`run`, each row's (route, MACs) if any."""
        taken = list(routes) or [(None, None)] * len(logits)
        if self.task.is_regression:
            return [Prediction(float(row[0]), None, *route) for row, route in zip(logits, taken)]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        labels = self.task.labels
        return [Prediction(labels[int(p.argmax())], {label: float(v) for label, v in zip(labels, p)}, *route)
                for p, route in zip(probs, taken)]


def read_inputs(path: str, pairs: bool) -> tuple[list[str], Optional[list[str]]]:
    """Texts (and second texts when ``pairs``) from a TSV file (one or two tab-separated columns, no
    header) or a JSON-lines file (``.jsonl``/``.json``: ``{"text": ..., "text_pair": ...}``).

    One-line errors name the file and line: a pair model given one text, a single-sentence
    model given two, a line that is not valid JSON.
    """
    json_lines = path.endswith((".jsonl", ".json"))
    texts, seconds = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UserError(f"--input {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"--input {path}: not UTF-8 text") from None
    want = "two texts (a sentence pair)" if pairs else "one text"
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if json_lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"--input {path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError(f"--input {path}:{lineno}: expected an object with a \"text\" string")
            fields = [row["text"]] + ([row["text_pair"]] if row.get("text_pair") is not None else [])
        else:
            fields = line.split("\t")
        if len(fields) != (2 if pairs else 1):
            layout = ('"text" and "text_pair"' if pairs else 'only "text"') if json_lines else \
                ("two tab-separated columns" if pairs else "one column (no tabs)")
            raise UserError(f"--input {path}:{lineno}: the model takes {want} per line: expected {layout}, "
                            f"got {len(fields)} field(s)")
        texts.append(fields[0])
        seconds.append(fields[1] if pairs else None)
    if not texts:
        raise UserError(f"--input {path}: no inputs (the file is empty)")
    return texts, (seconds if pairs else None)
