"""The predictors' tokenizer: PaddleNLP's ``BertTokenizer`` rules on HF ``tokenizers``, without PaddleNLP.

Why: importing PaddleNLP imports most of it (taskflow, the trainer, peft) and PaddleSlim through it:
3 s and 280 MB more than ``import paddle`` alone, in every predictor and serving process, for a
tokenizer.  An export folder holds what the tokenizer needs (``vocab.txt``, ``tokenizer_config.json``,
written by ``save_pretrained``), so a predictor builds it from those with the Rust ``tokenizers``
library and imports neither PaddleNLP nor PaddleSlim (an ONNX export's predictor not even paddle).

It must give the ids training gave (``glue.data.encode`` through PaddleNLP), so it follows
PaddleNLP 2.8's rules where they differ from HF's BERT:

* basic tokenisation: drop NUL, U+FFFD and control characters, whitespace to spaces, spaces around CJK
  ideographs, lower case and strip accents (per ``do_lower_case`` / ``strip_accents``), split on
  whitespace, then isolate every punctuation *and symbol* character (PaddleNLP also splits Unicode
  symbols, category S, and eight listed code points; HF's BERT splits punctuation only);
* WordPiece: greedy longest match, ``##`` continuations, words over 100 characters are ``[UNK]``;
* special tokens written in the text stay whole;
* truncation ``longest_first`` from the right, one token at a time from the longer text, from the
  second on a tie (``PretrainedTokenizerBase.truncate_sequences``): done here, not by ``tokenizers``,
  whose pair rule differs;
* ``[CLS] a [SEP]`` (``b [SEP]``), token types 0 then 1.

Tested against PaddleNLP's tokenizer on GLUE dev text and hand-made edge cases (tests/deploy/test_tokenizer.py).
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from ofa_flexbert.errors import UserError

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
MAX_WORD_CHARS = 100  # PaddleNLP's WordpieceTokenizer.max_input_chars_per_word
# PaddleNLP's _is_punctuation (ASCII non-alphanumerics, Unicode P*) and _is_symbol (Unicode S* and these
# code points), each such character a token of its own (BasicTokenizer._run_split_on_punc).
ISOLATED = r"[!-/:-@\[-`{-~\p{P}\p{S}\x{00AD}\x{00B2}\x{00BA}\x{3007}\x{00B5}\x{00D8}\x{014B}\x{01B1}]"


def read_vocab(path: str) -> dict[str, int]:
    """token -> id as PaddleNLP reads vocab.txt (``Vocab.load_vocabulary``): the line number, a repeated
    token keeping its last line."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    return vocab


def truncate_pair(first: list[int], second: Optional[list[int]], budget: int) -> tuple[list[int], Optional[list[int]]]:
    """PaddleNLP's ``longest_first`` truncation to ``budget`` word pieces (special tokens excluded): a
    single text loses its tail; a pair loses one token at a time from the longer, the second on a tie."""
    excess = len(first) + (len(second) if second is not None else 0) - budget
    if excess <= 0:
        return first, second
    if second is None:
        return (first[:-excess] if len(first) > excess else first), None
    for _ in range(excess):
        if len(first) > len(second):
            first = first[:-1]
        else:
            second = second[:-1]
    return first, second


def special_token(config: dict, name: str) -> str:
    """A special token of tokenizer_config.json (a string, or an added token's ``{"content": ...}``),
    BERT's default when absent (``unk_token`` -> ``[UNK]``)."""
    value = config.get(name) or f"[{name.split('_')[0].upper()}]"
    return value["content"] if isinstance(value, dict) else str(value)


class WordPieceTokenizer:
    """BERT WordPiece tokenisation of an export folder's vocabulary, as PaddleNLP's BertTokenizer does it."""

    def __init__(self, folder: str):
        from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        config_path, vocab_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, VOCAB_FILE)
        for path in (config_path, vocab_path):
            if not os.path.isfile(path):
                raise UserError(f"--export_dir {folder}: no {os.path.basename(path)} (the tokenizer --stage export "
                                "saves beside the model)")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        if config.get("tokenizer_class", "BertTokenizer") != "BertTokenizer" or not config.get("do_basic_tokenize", True) \
                or config.get("never_split"):
            raise UserError(f"{config_path}: the predictor reads BertTokenizer folders with basic tokenisation and no "
                            f"never_split list, got {config.get('tokenizer_class')!r}")
        self.vocab = read_vocab(vocab_path)
        self.special = {name: special_token(config, name) for name in SPECIAL}
        missing = [t for t in self.special.values() if t not in self.vocab]
        if missing:
            raise UserError(f"{vocab_path}: the special tokens {', '.join(missing)} are not in the vocabulary")
        lower = bool(config.get("do_lower_case", True))
        tokenizer = Tokenizer(WordPiece(self.vocab, unk_token=self.special["unk_token"],
                                        max_input_chars_per_word=MAX_WORD_CHARS))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=config.get("strip_accents"), lowercase=lower)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                           pre_tokenizers.Split(Regex(ISOLATED), "isolated")])
        tokenizer.add_special_tokens(list(self.special.values()))  # written in a text, they stay whole
        self._tokenizer = tokenizer
        self.pad_token_id = self.vocab[self.special["pad_token"]]
        self.cls_token_id = self.vocab[self.special["cls_token"]]
        self.sep_token_id = self.vocab[self.special["sep_token"]]

    def word_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's word-piece ids, no special tokens added, no truncation."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], pairs: Optional[Sequence[str]], max_seq_length: int) -> list[dict]:
        """``{'input_ids', 'token_type_ids'}`` per input, truncated to ``max_seq_length`` as training's were."""
        firsts = self.word_pieces(texts)
        seconds = self.word_pieces(pairs) if pairs is not None else [None] * len(firsts)
        special = 3 if pairs is not None else 2
        rows = []
        for first, second in zip(firsts, seconds):
            first, second = truncate_pair(first, second, max_seq_length - special)
            ids = [self.cls_token_id, *first, self.sep_token_id]
            types = [0] * len(ids)
            if second is not None:
                ids += [*second, self.sep_token_id]
                types += [1] * (len(second) + 1)
            rows.append({"input_ids": ids, "token_type_ids": types})
        return rows
