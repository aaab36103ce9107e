"""GLUE readers, tokenisation and batching (ofa_flexbert.data)."""
import os

import numpy as np
import paddle
import pytest

from ofa_flexbert.glue.data import (
    TASKS,
    EpochBatchSampler,
    Example,
    encode,
    get_task,
    make_loader,
    read_augmented,
    read_split,
)
from ofa_flexbert.errors import UserError

QUOTED = '"a, b" c'  # GLUE text is not CSV-quoted: this must come back verbatim


def write_tsv(path, lines, bom=False):
    """Write raw lines (lists are joined with tabs) exactly as given."""
    text = "\n".join("\t".join(line) if isinstance(line, (list, tuple)) else line
                     for line in lines) + "\n"
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write(text)
    return str(path)


def user_error(fn, *args):
    with pytest.raises(UserError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Real data (GLUE_DIR)
# ---------------------------------------------------------------------------------------------


def test_rte_real_counts_and_labels(glue_dir):
    rte = get_task("rte")
    d = os.path.join(glue_dir, "RTE")
    train = read_split(rte, d, "train")
    dev = read_split(rte, d, "dev")
    test = read_split(rte, d, "test")
    assert (len(train), len(dev), len(test)) == (2490, 277, 3000)
    assert train[0] == Example("No Weapons of Mass Destruction Found in Iraq Yet.",
                               "Weapons of Mass Destruction Found in Iraq.", 1)  # not_entailment
    assert {ex.label for ex in train} == {0, 1}
    assert all(ex.label is None for ex in test)
    assert test[0].text_b == "Shukla is related to Mangla."


def test_mrpc_real_bom_and_unbalanced_quote(glue_dir):
    mrpc = get_task("mrpc")
    d = os.path.join(glue_dir, "MRPC")
    train = read_split(mrpc, d, "train")
    assert len(train) == 3668
    assert train[0].text_a.startswith('Amrozi accused his brother, whom he called "the witness"')
    assert train[0].text_b.startswith("Referring to him as only")
    assert train[0].label == 1  # Quality, column 0
    assert {ex.label for ex in train} == {0, 1}
    dev = read_split(mrpc, d, "dev")
    assert len(dev) == 408  # a quoting reader merges lines after dev.tsv line 2
    assert dev[0].text_b == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert dev[1].text_a.startswith("Magnarelli said Racicot hated the Iraqi regime")


def test_sst2_real_counts(glue_dir):
    sst = get_task("sst2")
    d = os.path.join(glue_dir, "SST-2")
    train, dev = read_split(sst, d, "train"), read_split(sst, d, "dev")
    assert (len(train), len(dev)) == (6920, 1821)
    assert dev[0] == Example("no movement , no yuks , not much of anything", None, 0)


# ---------------------------------------------------------------------------------------------
# Synthetic files in every official layout
# ---------------------------------------------------------------------------------------------

MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                     "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                     "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:11] + ["label2", "label3", "label4", "label5", "gold_label"]


def _mnli_row(gold, annotators):
    return ["0", "31193", "31193n", "fiction", "( ( x ) )", "( y )", "(ROOT x)", "(ROOT y)",
            QUOTED, "second", *annotators, gold]


# task -> (file lines, expected examples); written as train.tsv and dev.tsv
LAYOUTS = {
    "cola": ([["gj04", "1", "", QUOTED],           # no header: the first line is data
              ["gj04", "0", "*", "second"]],
             [Example(QUOTED, None, 1), Example("second", None, 0)]),
    "sst-2": (["sentence\tlabel", [QUOTED, "1"], ["second", "0"]],
              [Example(QUOTED, None, 1), Example("second", None, 0)]),
    "mrpc": (["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
              ["0", "11", "12", QUOTED, "second"], ["1", "13", "14", "x", "y"]],
             [Example(QUOTED, "second", 0), Example("x", "y", 1)]),
    "sts-b": (["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
               ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", QUOTED, "second", "3.800"]],
              [Example(QUOTED, "second", 3.8)]),
    "qqp": (["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
             ["7", "1", "2", QUOTED, "second", "1"], ["8", "3", "4", "x", "y", "0"]],
            [Example(QUOTED, "second", 1), Example("x", "y", 0)]),
    "mnli": (["\t".join(MNLI_TRAIN_HEADER), _mnli_row("neutral", ["entailment"])],
             [Example(QUOTED, "second", 2)]),
    "qnli": (["index\tquestion\tsentence\tlabel", ["0", QUOTED, "second", "not_entailment"],
              ["1", "x", "y", "entailment"]],
             [Example(QUOTED, "second", 1), Example("x", "y", 0)]),
    "rte": (["index\tsentence1\tsentence2\tlabel", ["0", QUOTED, "second", "not_entailment"],
             ["1", "x", "y", "entailment"]],
            [Example(QUOTED, "second", 1), Example("x", "y", 0)]),
    "wnli": (["index\tsentence1\tsentence2\tlabel", ["0", QUOTED, "second", "1"]],
             [Example(QUOTED, "second", 1)]),
}


def test_every_task_has_a_layout_test():
    assert set(LAYOUTS) == set(TASKS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_synthetic_train_and_dev_layouts(tmp_path, name):
    lines, expected = LAYOUTS[name]
    task = get_task(name)
    for split in ("train",) + task.dev_splits:
        write_tsv(tmp_path / f"{split}.tsv", lines)
        assert read_split(task, str(tmp_path), split) == expected


def test_mnli_dev_splits_use_gold_label_last_column(tmp_path):
    mnli = get_task("mnli")
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    # label1 disagrees with gold_label, and dev has 16 columns (train 12): the label is the LAST one
    write_tsv(tmp_path / "dev_matched.tsv",
              ["\t".join(MNLI_DEV_HEADER),
               _mnli_row("contradiction", ["neutral", "neutral", "entailment", "neutral", "neutral"])])
    write_tsv(tmp_path / "dev_mismatched.tsv",
              ["\t".join(MNLI_DEV_HEADER),
               _mnli_row("entailment", ["neutral"] * 5), _mnli_row("neutral", ["entailment"] * 5)])
    matched = read_split(mnli, str(tmp_path), "dev_matched")
    assert matched == [Example(QUOTED, "second", 0)]
    assert read_split(mnli, str(tmp_path), "dev") == matched  # 'dev' means matched
    assert [ex.label for ex in read_split(mnli, str(tmp_path), "dev_mismatched")] == [1, 2]


TEST_LAYOUTS = {
    "cola": (["index\tsentence", ["0", QUOTED]], (QUOTED, None)),
    "sst-2": (["index\tsentence", ["0", QUOTED]], (QUOTED, None)),
    "mrpc": (["index\t#1 ID\t#2 ID\t#1 String\t#2 String", ["0", "1", "2", QUOTED, "b"]], (QUOTED, "b")),
    "sts-b": (["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
               ["0", "g", "f", "y", "o", "s1", "s2", QUOTED, "b"]], (QUOTED, "b")),
    "qqp": (["id\tquestion1\tquestion2", ["0", QUOTED, "b"]], (QUOTED, "b")),
    "mnli": (["\t".join(MNLI_TRAIN_HEADER[:10]), _mnli_row("x", [])[:10]], (QUOTED, "second")),
    "qnli": (["index\tquestion\tsentence", ["0", QUOTED, "b"]], (QUOTED, "b")),
    "rte": (["index\tsentence1\tsentence2", ["0", QUOTED, "b"]], (QUOTED, "b")),
    "wnli": (["index\tsentence1\tsentence2", ["0", QUOTED, "b"]], (QUOTED, "b")),
}


@pytest.mark.parametrize("name", sorted(TEST_LAYOUTS))
def test_synthetic_test_layouts_are_unlabelled(tmp_path, name):
    lines, (text_a, text_b) = TEST_LAYOUTS[name]
    task = get_task(name)
    stem = "test_matched" if name == "mnli" else "test"
    write_tsv(tmp_path / f"{stem}.tsv", lines)
    assert read_split(task, str(tmp_path), "test") == [Example(text_a, text_b, None)]


def test_columns_are_split_on_tabs_only(tmp_path):
    rte = get_task("rte")
    # commas, quotes and spaces are text; an extra trailing column is tolerated (label = last)
    path = write_tsv(tmp_path / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                              ['0', 'say "hi', 'x , y', 'entailment'],
                                              ['1', '', 'b', 'extra', 'not_entailment']])
    assert read_split(rte, str(tmp_path), "train") == [Example('say "hi', "x , y", 0),
                                                      Example("", "b", 1)]
    # one tab short: three columns where four are needed
    write_tsv(tmp_path / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                       "0\ta\tb\tentailment", "1\ta b entailment\t"])
    assert user_error(read_split, rte, str(tmp_path), "train") == (
        f"{path}:3: expected at least 4 tab-separated columns, found 3")


def test_blank_lines_are_skipped_but_line_numbers_stay_physical(tmp_path):
    sst = get_task("sst-2")
    path = write_tsv(tmp_path / "dev.tsv", ["sentence\tlabel", "good\t1", "", "bad\tmaybe", ""])
    assert user_error(read_split, sst, str(tmp_path), "dev") == (
        f"{path}:4: unknown label 'maybe' for task sst-2; expected one of: 0, 1")


def test_bom_is_stripped_from_the_first_cell(tmp_path):
    from ofa_flexbert.glue.data import _rows

    path = write_tsv(tmp_path / "train.tsv", ["1\tx"], bom=True)
    assert list(_rows(path, header=False, what="x")) == [(1, ["1", "x"])]
    # and through read_split: MRPC's label sits in column 0 right after the header's BOM
    path = write_tsv(tmp_path / "train.tsv", LAYOUTS["mrpc"][0], bom=True)
    assert read_split(get_task("mrpc"), str(tmp_path), "train") == LAYOUTS["mrpc"][1]


# ---------------------------------------------------------------------------------------------
# Task lookup and error messages
# ---------------------------------------------------------------------------------------------


def test_get_task_aliases_and_spec():
    assert get_task("SST2") is get_task("sst-2") is TASKS["sst-2"]
    assert get_task("stsb") is get_task("STS-B")
    assert get_task("MNLI").dev_splits == ("dev_matched", "dev_mismatched")
    stsb = get_task("sts-b")
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.primary_metric == "pearson"
    mnli = get_task("mnli")
    assert not mnli.is_regression and mnli.num_labels == 3
    assert mnli.labels == ("contradiction", "entailment", "neutral")
    assert get_task("mrpc").metrics == ("acc", "f1", "acc_and_f1")
    assert get_task("cola").primary_metric == "mcc"
    assert [t.dir_name for t in TASKS.values()] == [
        "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]


def test_unknown_task_message():
    assert user_error(get_task, "xyz") == (
        "unknown task 'xyz'; expected one of: cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, wnli")


def test_missing_file_message(tmp_path):
    path = os.path.join(str(tmp_path), "dev.tsv")
    assert user_error(read_split, get_task("rte"), str(tmp_path), "dev") == (
        f"{path}: no such file (the GLUE RTE dev split)")
    path = os.path.join(str(tmp_path), "dev_mismatched.tsv")
    assert user_error(read_split, get_task("mnli"), str(tmp_path), "dev_mismatched") == (
        f"{path}: no such file (the GLUE MNLI dev_mismatched split)")


def test_unknown_label_message(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                              "0\ta\tb\tentailment", "1\ta\tb\tmaybe"])
    assert user_error(read_split, get_task("rte"), str(tmp_path), "train") == (
        f"{path}:3: unknown label 'maybe' for task rte; expected one of: entailment, not_entailment")


def test_too_few_columns_message(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", ["gj04\t1\t\tfine", "gj04\t1"])
    assert user_error(read_split, get_task("cola"), str(tmp_path), "train") == (
        f"{path}:2: expected at least 4 tab-separated columns, found 2")


def test_bad_float_score_message(tmp_path):
    lines = [LAYOUTS["sts-b"][0][0], ["0", "g", "f", "y", "o", "s", "s", "a", "b", "high"]]
    path = write_tsv(tmp_path / "dev.tsv", lines)
    assert user_error(read_split, get_task("sts-b"), str(tmp_path), "dev") == (
        f"{path}:2: expected a finite float score in the last column for task sts-b, found 'high'")


@pytest.mark.parametrize("content", ["", "index\tsentence1\tsentence2\tlabel\n"])
def test_empty_or_header_only_file(tmp_path, content):
    (tmp_path / "train.tsv").write_text(content)
    path = os.path.join(str(tmp_path), "train.tsv")
    assert user_error(read_split, get_task("rte"), str(tmp_path), "train") == f"{path}: no examples"


def test_unknown_split_and_unreadable_and_bad_utf8(tmp_path):
    assert user_error(read_split, get_task("rte"), str(tmp_path), "valid") == (
        "unknown split 'valid' for task rte; expected one of: train, dev, test")
    os.mkdir(tmp_path / "dev.tsv")
    assert user_error(read_split, get_task("rte"), str(tmp_path), "dev").startswith(
        f"{os.path.join(str(tmp_path), 'dev.tsv')}: cannot read")
    path = tmp_path / "train.tsv"
    path.write_bytes(b"index\ts1\ts2\tlabel\n0\ta\tb\tentailment\n1\ta\xff\tb\tentailment\n")
    assert user_error(read_split, get_task("rte"), str(tmp_path), "train") == (
        f"{path}:3: not valid UTF-8 text")


# ---------------------------------------------------------------------------------------------
# Augmented data
# ---------------------------------------------------------------------------------------------


def test_train_aug_uses_train_layout_and_wins(tmp_path):
    rte = get_task("rte")
    write_tsv(tmp_path / "train_aug.tsv", ["index\tsentence1\tsentence2\tlabel",
                                           ["0", QUOTED, "b", "not_entailment"]])
    write_tsv(tmp_path / "train_RTE_aug_with_logits.tsv", ["index\tsentence1\tsentence2\tlabel",
                                                           ["0", "other", "b", "0.1 2.3"]])
    assert read_augmented(rte, str(tmp_path)) == [Example(QUOTED, "b", 1)]


def test_reference_logits_file_gives_argmax_labels(tmp_path):
    rte = get_task("rte")
    write_tsv(tmp_path / "train_RTE_aug_with_logits.tsv",
              ["index\tsentence1\tsentence2\tlabel",
               ["0", "a", "b", "0.1 2.3"], ["1", "c", "d", "2.0 -1.5"], ["2", "e", "f", "entailment"]])
    assert read_augmented(rte, str(tmp_path)) == [
        Example("a", "b", 1), Example("c", "d", 0), Example("e", "f", 0)]


def test_reference_logits_other_layouts(tmp_path):
    # CoLA: no header skip, logits in column 1
    write_tsv(tmp_path / "train_CoLA_aug_with_logits.tsv",
              [["gj04", "-1.0 2.0", "", QUOTED], ["gj04", "3 1", "", "x"]])
    assert read_augmented(get_task("cola"), str(tmp_path)) == [
        Example(QUOTED, None, 1), Example("x", None, 0)]
    # MRPC: logits in column 0
    write_tsv(tmp_path / "train_MRPC_aug_with_logits.tsv",
              [LAYOUTS["mrpc"][0][0], ["0.9 -0.2", "1", "2", "a", "b"]])
    assert read_augmented(get_task("mrpc"), str(tmp_path)) == [Example("a", "b", 0)]
    # MNLI: plain string label; STS-B: float
    write_tsv(tmp_path / "train_MNLI_aug_with_logits.tsv",
              ["\t".join(MNLI_TRAIN_HEADER), _mnli_row("entailment", ["neutral"])])
    assert read_augmented(get_task("mnli"), str(tmp_path)) == [Example(QUOTED, "second", 1)]
    write_tsv(tmp_path / "train_STS-B_aug_with_logits.tsv",
              [LAYOUTS["sts-b"][0][0], ["0", "g", "f", "y", "o", "s", "s", "a", "b", "1.25"]])
    assert read_augmented(get_task("sts-b"), str(tmp_path)) == [Example("a", "b", 1.25)]


def test_augmented_errors(tmp_path):
    rte = get_task("rte")
    first = os.path.join(str(tmp_path), "train_aug.tsv")
    second = os.path.join(str(tmp_path), "train_RTE_aug_with_logits.tsv")
    assert user_error(read_augmented, rte, str(tmp_path)) == (
        f"no augmented training data for task rte: neither {first} nor {second} exists")
    write_tsv(second, ["index\tsentence1\tsentence2\tlabel", ["0", "a", "b", "0.1 0.2 0.3"]])
    assert user_error(read_augmented, rte, str(tmp_path)) == (
        f"{second}:2: unknown label '0.1 0.2 0.3' for task rte; "
        "expected one of: entailment, not_entailment, or 2 space-separated logits")


def test_plain_splits_do_not_accept_logits(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                              ["0", "a", "b", "0.1 2.3"]])
    assert user_error(read_split, get_task("rte"), str(tmp_path), "train") == (
        f"{path}:2: unknown label '0.1 2.3' for task rte; expected one of: entailment, not_entailment")


# ---------------------------------------------------------------------------------------------
# Tokenisation and batching
# ---------------------------------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from paddlenlp.transformers import BertTokenizer

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    return BertTokenizer(str(vocab))


def _pairs():
    return [Example("the cat", "a dog", 0),                                   # 7 ids
            Example("the cat sat", "on the mat", 1),                          # 9 ids
            Example(" ".join(WORDS * 3), "the dog ran far away", 1),          # truncated
            Example("cat", "dog", 0),                                         # 5 ids
            Example("a dog ran", "far", 1)]                                   # 7 ids


def test_encode_truncates_and_does_not_pad(tokenizer):
    ds = encode(_pairs(), get_task("rte"), tokenizer, max_seq_length=12)
    lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
    assert lengths == [7, 9, 12, 5, 7]
    row = ds[0]
    assert set(row) == {"input_ids", "token_type_ids", "labels"}
    assert row["input_ids"] == [2, 5, 6, 3, 10, 11, 3]  # [CLS] the cat [SEP] a dog [SEP]
    assert row["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert isinstance(row["labels"], int)
    assert all(len(ds[i]["token_type_ids"]) == lengths[i] for i in range(len(ds)))


def test_encode_rejects_too_small_max_length(tokenizer):
    # the tokenizer itself would only log an error and return the untruncated sequence
    assert user_error(encode, _pairs(), get_task("rte"), tokenizer, 3) == (
        "max_seq_length must be an integer >= 4 for task rte "
        "(special tokens plus one word piece), got 3")


def test_loader_pads_each_batch_to_its_own_longest(tokenizer):
    ds = encode(_pairs(), get_task("rte"), tokenizer, max_seq_length=12)
    loader = make_loader(ds, tokenizer, batch_size=2)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    shapes = [list(b["input_ids"].shape) for b in batches]
    assert shapes == [[2, 9], [2, 12], [1, 7]]  # not [*, 12] everywhere
    first = batches[0]
    assert first["input_ids"].numpy().tolist()[0] == [2, 5, 6, 3, 10, 11, 3, 0, 0]
    assert first["token_type_ids"].shape == first["input_ids"].shape
    assert first["labels"].dtype == paddle.int64
    assert first["labels"].numpy().tolist() == [0, 1]
    assert isinstance(loader.batch_sampler, EpochBatchSampler)


def test_loader_regression_labels_are_float32(tokenizer):
    examples = [Example("the cat", "a dog", 3.8), Example("cat", "dog", 0.25)]
    ds = encode(examples, get_task("sts-b"), tokenizer, max_seq_length=16)
    batch = next(iter(make_loader(ds, tokenizer, batch_size=4)))
    assert batch["labels"].dtype == paddle.float32
    assert list(batch["labels"].shape) == [2]
    np.testing.assert_allclose(batch["labels"].numpy(), [3.8, 0.25], rtol=1e-6)


def test_unlabelled_examples_have_no_labels(tokenizer):
    ds = encode([Example("the cat", None, None), Example("dog", None, None)],
                get_task("sst-2"), tokenizer, max_seq_length=8)
    batch = next(iter(make_loader(ds, tokenizer, batch_size=2)))
    assert "labels" not in batch
    assert list(batch["input_ids"].shape) == [2, 4]


def test_loader_follows_sampler_epoch(tokenizer):
    ds = encode(_pairs(), get_task("rte"), tokenizer, max_seq_length=12)
    loader = make_loader(ds, tokenizer, batch_size=5, shuffle=True, seed=3)
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        order = np.random.RandomState(3 + epoch).permutation(5)
        (batch,) = list(loader)
        assert batch["labels"].numpy().tolist() == [ds[i]["labels"] for i in order]
        first_len = len(ds[int(order[0])]["input_ids"])
        assert batch["input_ids"].numpy()[0, :first_len].tolist() == ds[int(order[0])]["input_ids"]


def test_epoch_batch_sampler_is_deterministic():
    def batches(seed, epoch, **kw):
        s = EpochBatchSampler(103, 10, shuffle=True, seed=seed, **kw)
        s.set_epoch(epoch)
        return list(s)

    a = batches(7, 0)
    assert a == batches(7, 0)
    assert a != batches(7, 1)
    assert a != batches(8, 0)
    assert batches(7, 1) == batches(8, 0)  # the order depends on seed + epoch only
    flat = [i for b in a for i in b]
    assert sorted(flat) == list(range(103)) and flat != list(range(103))
    assert flat == np.random.RandomState(7).permutation(103).tolist()
    assert [len(b) for b in a] == [10] * 10 + [3]
    assert len(EpochBatchSampler(103, 10, shuffle=True, seed=7)) == 11
    dropped = EpochBatchSampler(103, 10, shuffle=True, seed=7, drop_last=True)
    assert len(dropped) == 10 and len(list(dropped)) == 10
    plain = EpochBatchSampler(5, 2, shuffle=False, seed=0)
    plain.set_epoch(4)
    assert list(plain) == [[0, 1], [2, 3], [4]]


# --- --group_by_length --------------------------------------------------------------------------

def _padded_tokens(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_group_by_length_visits_each_example_once_in_batches_of_similar_length():
    from ofa_flexbert.glue.data import POOL_BATCHES

    rng = np.random.RandomState(0)
    n, size = 2 * POOL_BATCHES * 8 + 13, 8  # two full pools and a partial one with a short last batch
    lengths = rng.randint(5, 128, size=n)

    def batches(seed, epoch, grouped=True, **kw):
        s = EpochBatchSampler(n, size, shuffle=True, seed=seed, lengths=lengths if grouped else None, **kw)
        s.set_epoch(epoch)
        return list(s)

    grouped = batches(3, 0)
    assert grouped == batches(3, 0) and grouped != batches(3, 1)  # a pure function of (seed, epoch)
    assert sorted(i for b in grouped for i in b) == list(range(n))  # every example once
    assert [len(b) for b in grouped] == [size] * (n // size) + [n % size]  # only the last batch is short
    plain = batches(3, 0, grouped=False)
    assert _padded_tokens(grouped, lengths) < 0.6 * _padded_tokens(plain, lengths)
    # the pools are the plain order's: pool k holds exactly the plain order's k-th 400 examples
    order = np.random.RandomState(3).permutation(n)
    pool = size * POOL_BATCHES
    pools = [set(order[s:s + pool].tolist()) for s in range(0, n, pool)]
    assert all(any(set(b) <= p for p in pools) for b in grouped)
    in_full_pools = [b for b in grouped if not set(b) <= pools[-1]]  # the last pool has only 13 examples
    assert len(in_full_pools) == 2 * POOL_BATCHES
    assert all(lengths[b].max() - lengths[b].min() <= 10 for b in in_full_pools)  # 400 lengths of 5..127 a pool
    # and the batch order is shuffled, not longest-first
    firsts = [lengths[b].max() for b in grouped[:-1]]
    assert firsts != sorted(firsts, reverse=True)


def test_group_by_length_without_shuffle_keeps_the_file_pools_in_order():
    lengths = [3, 9, 1, 7, 5, 2]
    sampler = EpochBatchSampler(6, 2, shuffle=False, seed=0, lengths=lengths)
    assert list(sampler) == [[1, 3], [4, 0], [5, 2]]  # one pool, longest first, batches in order


def test_group_by_length_shards_each_global_batch_across_ranks():
    lengths = np.random.RandomState(1).randint(5, 128, size=203)
    single = EpochBatchSampler(203, 20, shuffle=True, seed=5, lengths=lengths)
    ranks = [EpochBatchSampler(203, 10, shuffle=True, seed=5, rank=r, world_size=2, lengths=lengths) for r in (0, 1)]
    for s in (single, *ranks):
        s.set_epoch(2)
    for batch, first, second in zip(list(single), *[list(s) for s in ranks]):
        assert first + second == batch
    with pytest.raises(ValueError, match="lengths has 3 entries for 4 examples"):
        EpochBatchSampler(4, 2, shuffle=True, seed=0, lengths=[1, 2, 3])
