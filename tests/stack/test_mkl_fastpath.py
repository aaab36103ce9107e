"""The mkl_fastpath patch: which way it takes on which machine, and on this one what MKL then does.

MKL says which code branch it dispatched to through ``mkl_serv_cpu_detect()``: 0 is the generic
path it takes on a non-Intel CPU, 5 the AVX2 branch, 7 AVX-512.  Interposed, MKL takes the best branch
the CPU has: AVX-512 on a CPU with it (Zen 4 and later), AVX2 on one without (Zen 2/3, CI's machine
once), so the expected branch is read off the CPU's flags, not assumed.  Each process test runs a fresh
interpreter (the patch acts before MKL loads), asks MKL for its branch and runs a BERT forward and
backward whose numbers must agree with the stock path's.
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from patches import mkl_fastpath
from patches.mkl_fastpath import Machine, choose_fast_path

MKL = "/opt/paddle/libs/libmklml_intel.so"


def machine(**changes) -> Machine:
    values = dict(system="Linux", arch="x86_64", vendor="AuthenticAMD", avx2=True, mkl=MKL, mkl_loaded=False)
    values.update(changes)
    return Machine(**values)


@pytest.mark.parametrize("changes, environ, action, reason", [
    ({}, {}, "interpose", "AuthenticAMD"),
    ({"vendor": "HygonGenuine"}, {}, "interpose", "HygonGenuine"),
    ({}, {"OFA_FLEXBERT_MKL_FASTPATH": "0"}, "none", "off (OFA_FLEXBERT_MKL_FASTPATH=0)"),
    ({}, {"OFA_FLEXBERT_MKL_FASTPATH": "1"}, "interpose", "AuthenticAMD"),
    ({"vendor": "GenuineIntel"}, {}, "none", "not needed (Intel CPU: MKL takes its fast path itself)"),
    ({"arch": "aarch64", "vendor": ""}, {}, "none", "not needed (aarch64 CPU)"),
    ({"vendor": ""}, {}, "none", "left alone (CPU vendor unknown)"),
    ({"mkl": None}, {}, "none", "not needed (this paddle build has no MKL)"),
    ({"system": "Windows", "arch": "AMD64"}, {}, "env", "AuthenticAMD"),
    ({"system": "Windows", "arch": "AMD64", "avx2": False}, {}, "none", "left alone (AuthenticAMD CPU without AVX2)"),
])
def test_plan_per_machine(changes, environ, action, reason):
    assert choose_fast_path(machine(**changes), environ) == mkl_fastpath.FastPath(action, reason)


def test_plan_refuses_once_mkl_is_loaded():
    chosen = choose_fast_path(machine(mkl_loaded=True), {})
    assert chosen.action == "none" and chosen.reason.startswith("NOT applied: paddle had run math before")


def test_cache_folder_must_be_private(tmp_path, monkeypatch):
    """The cached library is loaded into the process: a folder others can write to is never used."""
    shared = tmp_path / "cache" / "ofa_flexbert"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mkl_fastpath.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert mkl_fastpath.cache_dir() == str(tmp_path / "tmp" / f"ofa_flexbert-{os.getuid()}")
    shared.chmod(0o700)
    assert mkl_fastpath.cache_dir() == str(shared)


# --- on this machine ------------------------------------------------------------------------

HERE = mkl_fastpath.this_machine()


def cpu_flags() -> set[str]:
    """The first CPU's flags in /proc/cpuinfo (these tests run on Linux only: ``needs_amd_mkl``)."""
    try:
        with open("/proc/cpuinfo") as info:
            first = info.read().split("\n\n")[0]
    except OSError:
        return set()
    return next((line.split(":", 1)[1].split() for line in first.splitlines() if line.startswith("flags")), [])


HAS_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(cpu_flags())


def is_best_branch(branch: int) -> bool:
    """MKL's branch is the best this CPU offers: an AVX-512 one (above 5) where it has AVX-512, else AVX2 (5)."""
    return branch > 5 if HAS_AVX512 else branch == 5

needs_amd_mkl = pytest.mark.skipif(
    choose_fast_path(dataclasses.replace(HERE, mkl_loaded=False), {}).action != "interpose",
    reason="the fast path is only taken on Linux x86-64 CPUs not made by Intel, with paddle's MKL")

PROBE = r"""
import ctypes, json, sys
if PADDLE_FIRST:
    import paddle
    paddle.matmul(paddle.ones([2, 2]), paddle.ones([2, 2]))  # MKL loads here, before the patch
import patches
import numpy as np
import paddle
from paddlenlp.transformers import BertConfig, BertForSequenceClassification

paddle.base.core.set_num_threads(1)
paddle.seed(0)
config = BertConfig(vocab_size=300, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=512, max_position_embeddings=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, num_labels=2)
model = BertForSequenceClassification(config)
ids = paddle.to_tensor(np.random.RandomState(0).randint(1, 300, (8, 48)).astype("int64"))
logits = model(ids)
logits.sum().backward()
grad = model.bert.encoder.layers[0].linear1.weight.grad
mkl = ctypes.CDLL(patches.mkl_fastpath.paddle_mkl("Linux"))
print(json.dumps({"status": patches.mkl_fastpath.status, "branch": mkl.mkl_serv_cpu_detect(),
                  "logits": logits.numpy().tolist(), "grad": grad.numpy()[:8, :8].tolist()}))
"""


def probe(paddle_first=False, **env):
    """Run PROBE in a fresh interpreter with ``env`` added; its JSON line."""
    code = PROBE.replace("PADDLE_FIRST", str(paddle_first))
    full_env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "OFA_FLEXBERT_MKL_FASTPATH")}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@needs_amd_mkl
def test_fast_path_changes_the_branch_not_the_results(tmp_path):
    """Interposed: MKL leaves its generic branch (0) and the numbers agree with the stock path's."""
    stock, _ = probe(OFA_FLEXBERT_MKL_FASTPATH="0")
    fast, _ = probe(XDG_CACHE_HOME=str(tmp_path))
    assert stock["status"] == "MKL fast path: off (OFA_FLEXBERT_MKL_FASTPATH=0)"
    assert stock["branch"] == 0  # what MKL does on this CPU without the patch
    assert fast["status"] == f"MKL fast path: on ({HERE.vendor} CPU; mkl_serv_intel_cpu_true interposed)"
    assert is_best_branch(fast["branch"]), (fast["branch"], HAS_AVX512)
    assert len(list(tmp_path.glob("ofa_flexbert/mkl_intel_cpu_true-*.so"))) == 1  # built once, cached
    np.testing.assert_allclose(fast["logits"], stock["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast["grad"], stock["grad"], rtol=1e-4, atol=1e-6)


@needs_amd_mkl
def test_without_a_compiler_it_falls_back_to_the_avx2_branch(tmp_path):
    fallback, _ = probe(CC=str(tmp_path / "no-such-cc"), XDG_CACHE_HOME=str(tmp_path))
    assert fallback["status"].startswith(
        f"MKL fast path: on, AVX2 only ({HERE.vendor} CPU; MKL_DEBUG_CPU_TYPE=5; the faster interposed "
        "library could not be built: ")
    assert fallback["branch"] == 5


@needs_amd_mkl
def test_a_users_mkl_debug_cpu_type_is_kept(tmp_path):
    kept, _ = probe(CC=str(tmp_path / "no-such-cc"), XDG_CACHE_HOME=str(tmp_path), MKL_DEBUG_CPU_TYPE="4")
    assert "MKL_DEBUG_CPU_TYPE=4;" in kept["status"] and kept["branch"] == 4


@needs_amd_mkl
def test_too_late_is_said_not_hidden(tmp_path):
    """Math run before the patch: MKL stays generic and the user reads why on stderr."""
    late, stderr = probe(paddle_first=True, XDG_CACHE_HOME=str(tmp_path))
    assert late["branch"] == 0
    assert "MKL fast path: NOT applied: paddle had run math before ofa_flexbert/patches was imported" in stderr


@needs_amd_mkl
def test_import_paddle_first_is_still_in_time(tmp_path):
    """paddle loads MKL at its first op, not at import: a script's `import paddle` line may come first."""
    code = ("import paddle, patches, ctypes; "
            "paddle.matmul(paddle.ones([2, 2]), paddle.ones([2, 2])); "
            "print(ctypes.CDLL(patches.mkl_fastpath.paddle_mkl('Linux')).mkl_serv_cpu_detect())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert is_best_branch(int(done.stdout.split()[-1]))
