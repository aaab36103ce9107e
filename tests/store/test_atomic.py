"""atomic.py: the one recipe for files, model directories, checkpoints and exports."""
import json
import os
import stat

import pytest

from ofa_flexbert.store import atomic


def test_a_failure_while_staging_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "model.json").write_text("old")
    with pytest.raises(RuntimeError, match="check failed"):
        with atomic.staging(str(tmp_path), "export") as tmp:
            (open(os.path.join(tmp, "model.json"), "w")).write("new")
            raise RuntimeError("check failed")
    assert (target / "model.json").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_replace_dir_swaps_the_whole_directory_and_cleans_up(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "stale.bin").write_text("from the old run")
    with atomic.staging(str(tmp_path), "checkpoint") as tmp:
        with open(os.path.join(tmp, "state.json"), "w") as fh:
            json.dump({"step": 3}, fh)
        atomic.replace_dir(tmp, str(target))
    assert os.listdir(target) == ["state.json"]  # replaced as a whole: nothing of the old one survives
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]  # no .old, no staging folder


def test_a_staged_directory_gets_the_umasks_permissions_not_mkdtemps(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic.staging(str(tmp_path), "export") as tmp:
            atomic.replace_dir(tmp, str(tmp_path / "export"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "export").st_mode) == 0o755


def test_move_files_in_renames_the_chosen_files_last_and_keeps_the_others(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "flexbert.json").write_text("kept")
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in ("model_state.pdparams", "config.json", "vocab.txt"):
        (staged / name).write_text(name)
    order = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (order.append(os.path.basename(dst)), real_replace(src, dst)))
    atomic.move_files_in(str(staged), str(target), last=lambda name: name.endswith(".pdparams"))
    assert order == ["config.json", "vocab.txt", "model_state.pdparams"]
    assert sorted(os.listdir(target)) == ["config.json", "flexbert.json", "model_state.pdparams", "vocab.txt"]


def test_write_json_refuses_nan_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic.write_json(str(path), {"acc": 0.5})
    with pytest.raises(ValueError):
        atomic.write_json(str(path), {"acc": float("nan")})
    assert json.loads(path.read_text()) == {"acc": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]
