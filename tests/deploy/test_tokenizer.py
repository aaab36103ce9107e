"""The predictors' tokenizer (deploy/tokenizer.py) against PaddleNLP's BertTokenizer, which training used."""
import collections
import json
import os

import pytest

from conftest import fresh_python, hand_export
from ofa_flexbert.deploy.tokenizer import WordPieceTokenizer, truncate_pair
from ofa_flexbert.errors import UserError

# What the GLUE text does not show: accents and case, CJK, symbols PaddleNLP splits and HF's BERT does not,
# control and zero-width characters, Unicode whitespace, special tokens in the text, over-long words,
# empty texts, scripts without a vocabulary entry.
EDGE = ["Café naïve résumé", "ÅNGSTRÖM Über", "北京欢迎你 and 東京", "price: 5€, ©2020 ™ ± ° ² º µ Ø ø ŋ Ʊ 〇",
        "emoji 😀👍🏽 ok", "tab\tnew\nline\rcr", "zero\u200bwidth soft\u00adhyphen", "nul\x00and\ufffdrepl",
        "vt\x0bff\x0cnel\x85", "line\u2028sep para\u2029sep nbsp\u00a0x ideo\u3000y",
        "[SEP] in text [CLS][MASK] [sep]", "a" * 150 + " short", "x" * 99 + "y", "", "   ",
        "don't stop-believing!!! (yes) «quoted» „low“ — dash … ellipsis", "İstanbul ǅ ß ﬁ", "مرحبا بالعالم",
        "Ελληνικά кириллица", "ＦＵＬＬ ｗｉｄｔｈ", "math ∑∫√ ≤≥ arrows ←→", "^caret$ `tick` ~tilde|pipe\\",
        "under_score hash# at@ amp&", "\u0301combining first", "ﾊﾝｶｸ カタカナ ひらがな", "한국어 텍스트",
        "unbelievably unhappiness rethinking", "The film's running-time is 2h15m."]


def rich_folder(tmp_path, texts, lower=True) -> str:
    """A BertTokenizer folder whose vocabulary makes WordPiece work: the frequent words, every character
    seen, alone and as a ``##`` continuation, and a few ``##`` suffixes (saved by PaddleNLP, as exports are)."""
    from paddlenlp.transformers import BertTokenizer

    words = collections.Counter(w.lower() if lower else w for t in texts for w in t.split())
    chars = sorted({c.lower() if lower else c for t in texts for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, n in words.most_common(3000) if n > 2]
    vocab += chars + ["##" + c for c in chars] + ["##ing", "##ly", "##ness", "##s", "##ed", "un", "##happi", "##believ"]
    folder = tmp_path / ("lower" if lower else "cased")
    folder.mkdir()
    vocab_path = folder / "source-vocab.txt"
    vocab_path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizer(str(vocab_path), do_lower_case=lower).save_pretrained(str(folder))
    return str(folder)


def glue_texts(glue_dir, name: str, limit: int = 1500) -> tuple[list[str], list[str] | None]:
    from ofa_flexbert.glue.data import get_task, read_split

    task = get_task(name)
    examples = read_split(task, os.path.join(glue_dir, task.dir_name), task.dev_splits[0])[:limit]
    return [e.text_a for e in examples], ([e.text_b for e in examples] if examples[0].text_b else None)


def paddlenlp_rows(folder, texts, pairs, max_seq_length):
    """What training encodes (glue.data.encode through PaddleNLP's tokenizer)."""
    from paddlenlp.transformers import BertTokenizer

    from ofa_flexbert.glue.data import Example, encode, get_task

    examples = [Example(t, None if pairs is None else p, None) for t, p in zip(texts, pairs or [None] * len(texts))]
    rows = encode(examples, get_task("mrpc" if pairs else "sst-2"), BertTokenizer.from_pretrained(folder),
                  max_seq_length)
    return [{"input_ids": r["input_ids"], "token_type_ids": r["token_type_ids"]} for r in rows]


@pytest.mark.parametrize("name", ["sst-2", "mrpc", "rte"])
@pytest.mark.parametrize("max_seq_length", [128, 20])
def test_glue_dev_text_gets_the_ids_training_gave_it(glue_dir, tmp_path, name, max_seq_length):
    """Every dev text (pair) of three tasks, in full and cut to 20 tokens (pairs lose from the longer text)."""
    texts, pairs = glue_texts(glue_dir, name)
    folder = rich_folder(tmp_path, texts + (pairs or []))
    got = WordPieceTokenizer(folder).encode(texts, pairs, max_seq_length)
    want = paddlenlp_rows(folder, texts, pairs, max_seq_length)
    assert sum(len(r["input_ids"]) == max_seq_length for r in want) > (10 if max_seq_length == 20 else -1)
    assert sum("##" in t for t in open(os.path.join(folder, "vocab.txt"), encoding="utf-8")) > 0
    assert [i for i, (g, w) in enumerate(zip(got, want)) if g != w] == []


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("max_seq_length", [64, 8])
def test_edge_cases_get_the_ids_training_gave_them(tmp_path, lower, max_seq_length):
    folder = rich_folder(tmp_path, EDGE * 3, lower)
    seconds = ["second text here é"] * len(EDGE)
    tokenizer = WordPieceTokenizer(folder)
    for pairs in (None, seconds, list(reversed(EDGE))):
        got = tokenizer.encode(EDGE, pairs, max_seq_length)
        want = paddlenlp_rows(folder, EDGE, pairs, max_seq_length)
        assert [EDGE[i] for i, (g, w) in enumerate(zip(got, want)) if g != w] == []


def test_pair_truncation_takes_from_the_longer_text_and_from_the_second_on_a_tie():
    assert truncate_pair([1, 2, 3, 4], [5, 6], 4) == ([1, 2], [5, 6])
    assert truncate_pair([1, 2, 3], [4, 5, 6], 4) == ([1, 2], [4, 5])  # tie: the second first
    assert truncate_pair([1, 2], [3, 4, 5, 6, 7], 3) == ([1, 2], [3])  # 2 vs 2: the second again
    assert truncate_pair([1, 2, 3], None, 2) == ([1, 2], None)
    assert truncate_pair([1, 2], [3], 5) == ([1, 2], [3])


def test_a_folder_without_a_vocabulary_or_of_another_tokenizer_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^--export_dir .*: no vocab\.txt \(the tokenizer --stage export saves "
                                        r"beside the model\)$"):
        (tmp_path / "tokenizer_config.json").write_text("{}")
        WordPieceTokenizer(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ErnieTokenizer"}))
    with pytest.raises(UserError, match=r"the predictor reads BertTokenizer folders .* got 'ErnieTokenizer'$"):
        WordPieceTokenizer(str(tmp_path))


@pytest.mark.parametrize("runtime, imported", [("onnx", "[]"), ("paddle", "['paddle']")])
def test_a_predictor_process_imports_neither_paddlenlp_nor_paddleslim(tmp_path, runtime, imported):
    """A fresh process labelling text with a static export imports no PaddleNLP and no PaddleSlim; on
    onnxruntime it does not import paddle either (deploy/tokenizer.py says why it matters)."""
    from ofa_flexbert.deploy.graphs import save_onnx

    export_dir = hand_export(tmp_path)[0]
    save_onnx(export_dir)
    probe = ("import sys\n"
             "from ofa_flexbert import Predictor\n"
             f"p = Predictor({export_dir!r}, runtime={runtime!r})\n"
             "assert len(p.predict(['a good film', 'a bad one'])) == 2\n"
             "print(sorted(m for m in ('paddle', 'paddlenlp', 'paddleslim') if m in sys.modules))\n")
    assert fresh_python(probe) == imported
