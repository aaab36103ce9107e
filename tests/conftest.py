"""Shared test set-up: import order, patch hygiene and the tiny models every test uses."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import patches  # noqa: E402  -- before paddle (zlib_first)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402


# Fixtures that train or export through the CLI: a test using one (even through another fixture) is end to
# end, and must say so with @pytest.mark.slow (registered in pyproject.toml).
END_TO_END_FIXTURES = {"toy", "toy_teacher", "toy_width_model", "toy_gated", "exported", "reference_dirs"}


def pytest_collection_modifyitems(config, items):
    """Refuse to run when a test that uses an end-to-end fixture is not marked slow: `-m "not slow"` must stay fast."""
    unmarked = [item.nodeid for item in items
                if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"end-to-end tests without @pytest.mark.slow: {', '.join(unmarked)}")


@pytest.fixture
def patched():
    """The library patches applied for one test (``pytestmark = pytest.mark.usefixtures("patched")``)."""
    patches.apply()


@pytest.fixture(autouse=True)
def _restore_patches():
    """Every test starts and ends with the stock stack: patches are explicit, never leaked."""
    patches.restore()
    yield
    patches.restore()


@pytest.fixture
def glue_dir():
    """Real GLUE data (../shared/data/glue via GLUE_DIR); tests on it skip when unset."""
    path = os.environ.get("GLUE_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("GLUE_DIR is not set to the GLUE data folder")
    return path


def tiny_bert_config(**overrides):
    from paddlenlp.transformers import BertConfig

    values = dict(
        vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
    )
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture
def tiny_bert():
    """A random 3-layer, 4-head BERT classifier in eval mode (seeded)."""
    from paddlenlp.transformers import BertForSequenceClassification

    paddle.seed(0)
    model = BertForSequenceClassification(tiny_bert_config())
    model.eval()
    return model


@pytest.fixture
def tiny_batch():
    """Three rows, the last two padded with id 0 -- batch 3 catches the SuperLayerNorm bug."""
    rng = np.random.RandomState(0)
    ids = rng.randint(5, 40, size=(3, 7)).astype("int64")
    ids[1, 5:] = 0
    ids[2, 3:] = 0
    types = np.zeros_like(ids)
    types[:, 4:] = 1
    return paddle.to_tensor(ids), paddle.to_tensor(types)


# --- the demo's toy task and tiny teacher, shared by the stage tests ------------------------

FAST = ["--per_gpu_train_batch_size", "32", "--per_gpu_eval_batch_size", "200", "--max_seq_length", "40",
        "--config", os.path.join(ROOT, "configs", "demo.yaml")]


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory):
    """The demo task (small) and a tiny teacher fine-tuned on it: ``(data_dir, teacher_dir)``."""
    from ofa_flexbert.app.demo import write_synthetic_task, write_tiny_bert
    from ofa_flexbert.app.cli import main

    root = tmp_path_factory.mktemp("toy")
    data_dir, pretrained, teacher = str(root / "SST-2"), str(root / "pretrained"), str(root / "teacher")
    write_synthetic_task(data_dir, seed=0, num_train=2000, num_dev=400)
    write_tiny_bert(pretrained, seed=0)
    assert main(["--task", "sst-2", "--stage", "finetune", "--data_dir", data_dir, "--model_dir", pretrained,
                 "--output_dir", teacher, "--max_steps", "600", "--logging_steps", "600", *FAST]) == 0
    return data_dir, teacher


@pytest.fixture(scope="session")
def toy_width_model(toy_teacher, tmp_path_factory):
    """The toy teacher after a short width stage (with distillation): ``(data_dir, width_dir)``."""
    from ofa_flexbert.app.cli import main

    data_dir, teacher = toy_teacher
    out = str(tmp_path_factory.mktemp("toy_width") / "width")
    assert main(["--task", "sst-2", "--stage", "width", "--data_dir", data_dir, "--model_dir", teacher,
                 "--output_dir", out, "--distill", "--max_steps", "80", "--logging_steps", "80",
                 "--learning_rate", "1e-3", *FAST]) == 0
    return data_dir, out


@pytest.fixture(scope="session")
def toy_gated(toy_width_model, tmp_path_factory):
    """The toy width model with briefly trained gates and off-ramps: ``(data_dir, width_dir, gate_dir)``."""
    from ofa_flexbert.app.cli import main

    data_dir, width_dir = toy_width_model
    out = tmp_path_factory.mktemp("infer") / "gates"
    assert main(stage_argv("gate", data_dir, width_dir, out, "--max_steps", "60", "--logging_steps", "60",
                           "--learning_rate", "1e-3")) == 0
    return data_dir, width_dir, out


def fresh_python(code: str) -> str:
    """The last line ``code`` prints, run by this interpreter in a process of its own from the project root
    (what a new predictor or server process imports and costs, free of the test process's state)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def stage_argv(stage, data_dir, model_dir, out, *extra):
    """CLI arguments for one stage on the toy task (``extra`` flags override FAST's)."""
    return ["--task", "sst-2", "--stage", stage, "--data_dir", str(data_dir), "--model_dir", str(model_dir),
            "--output_dir", str(out), *FAST, *extra]


def vdl_scalars(output_dir, stage):
    """``{tag: [(step, value), ...]}`` of the VisualDL scalars a stage wrote into ``output_dir``."""
    from visualdl import LogReader

    vdl = os.path.join(str(output_dir), "vdl", stage)
    records = [name for name in os.listdir(vdl) if not name.startswith(".")]
    assert len(records) == 1, records
    reader = LogReader(file_path=os.path.join(vdl, records[0]))
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)] for tag in reader.get_tags()["scalar"]}


def without_dropout(model_dir, out_dir):
    """A copy of a model directory whose config turns dropout off (runs then compare exactly)."""
    import json
    import shutil

    shutil.copytree(str(model_dir), str(out_dir), ignore=shutil.ignore_patterns("checkpoint*", "vdl"))
    path = os.path.join(str(out_dir), "config.json")
    with open(path) as fh:
        config = json.load(fh)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with open(path, "w") as fh:
        json.dump(config, fh)
    return str(out_dir)


def run_interrupted(monkeypatch, strategy_class, crash_step, argv):
    """Run the CLI on ``argv`` and interrupt it in training step ``crash_step`` (a simulated Ctrl-C)."""
    from ofa_flexbert.app.cli import main

    calls = {"n": 0}
    original = strategy_class.train_step

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == crash_step:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, batch)

    monkeypatch.setattr(strategy_class, "train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    monkeypatch.setattr(strategy_class, "train_step", original)


def assert_same_checkpoint(a_dir, b_dir, atol=1e-6):
    """The resume checkpoints of two runs hold the same weights."""
    a = paddle.load(os.path.join(str(a_dir), "checkpoint", "model.pdparams"))
    b = paddle.load(os.path.join(str(b_dir), "checkpoint", "model.pdparams"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name].numpy(), a[name].numpy(), rtol=0, atol=atol, err_msg=name)


def hand_export(directory, task="sst-2", text_pair=False, width=0.5, seed=0, max_seq_length=16):
    """A random tiny BERT (mean pooling) exported by hand as the ``width`` subnet of ``task``, in seconds:
    ``(export_dir, model, route, tokenizer)`` -- the dygraph model and route give the expected logits."""
    from paddlenlp.transformers import BertForSequenceClassification, BertTokenizer

    from ofa_flexbert.app.demo import write_tiny_bert
    from ofa_flexbert.deploy.graphs import save_static
    from ofa_flexbert.deploy.layout import write_manifest
    from ofa_flexbert.deploy.narrow import shrink
    from ofa_flexbert.engine.routes import Route

    source = os.path.join(str(directory), "bert")
    write_tiny_bert(source, seed=seed)
    tokenizer = BertTokenizer.from_pretrained(source)
    patches.apply()
    model = BertForSequenceClassification.from_pretrained(source, num_labels=2)
    model.bert.config.pooling = "mean"
    model.eval()
    route = Route.uniform(model.bert.config, width, 1.0)
    export_dir = os.path.join(str(directory), "export")
    os.makedirs(export_dir)
    narrow = BertForSequenceClassification.from_pretrained(source, num_labels=2)
    narrow.bert.config.pooling = "mean"
    narrow.eval()
    shrink(narrow, route)
    save_static(narrow, export_dir)
    tokenizer.save_pretrained(export_dir)
    write_manifest(export_dir, {"kind": "static", "tag": f"w{width:g}_d1", "task": task, "num_labels": 2,
                                "max_seq_length": max_seq_length, "format": "x", "text_pair": text_pair})
    return export_dir, model, route, tokenizer
