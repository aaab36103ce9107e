"""Running the CLI on two gloo ranks under ``paddle.distributed.launch`` (through tests/dp_worker.py), for
the data-parallel tests of every training stage."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

WORKER = os.path.join(ROOT, "tests", "dp_worker.py")


def launch(tmp_path, name, mode, argv, expect_rc=0):
    """Run ``argv`` (CLI flags) on 2 gloo ranks; return ``[rank0 weights, rank1 weights]``."""
    dump, logs = tmp_path / f"{name}.dump", tmp_path / f"{name}.logs"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                           "--log_dir", str(logs), WORKER, str(dump), mode, *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != expect_rc:
        worker_logs = "".join((logs / f).read_text()[-3000:] for f in sorted(os.listdir(logs)) if f.startswith("workerlog"))
        pytest.fail(f"launch exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{worker_logs}")
    if expect_rc:
        return None
    return [dict(np.load(dump / f"rank{r}.npz")) for r in (0, 1)]
