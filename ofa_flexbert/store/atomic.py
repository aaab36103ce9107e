"""Atomic writes: a reader -- or a crash -- never sees half of what was written.

Why one module: results files, model directories, the resume checkpoint and exports are all
written by the same recipe -- build the new content beside the target (same folder, so a rename
is atomic), flush it to disk, then rename it into place -- and the recipe is easy to get subtly
wrong (a missing fsync, a temporary left behind, the old version deleted before the new one is
complete).  Three shapes of target use it:

* one file (:func:`write_bytes`, :func:`write_text`, :func:`write_json`);
* a directory whose files are replaced one by one, chosen files last (:func:`move_files_in`: a
  model directory, whose weights are renamed last so a crash leaves the old weights usable);
* a directory replaced as a whole (:func:`replace_dir`: the checkpoint, an export), keeping
  ``<target>.old`` until the new one is in place.

No framework imports: every stage, bench script and test may use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


def fsync_path(path: str) -> None:
    """Flush one file or directory entry to disk (directories: where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover  (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def fsync_tree(directory: str) -> None:
    """Flush every file under ``directory`` and the directory itself: after a power cut, a
    renamed directory is complete."""
    for root, _, files in os.walk(directory):
        for name in files:
            fsync_path(os.path.join(root, name))
    fsync_path(directory)


def write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step (temporary file in the same folder, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one step (:func:`write_bytes`)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, data: Any) -> None:
    """Indented JSON, keys in the order given; NaN is refused (strict JSON readers choke on it)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def staging(parent: str, name: str) -> Iterator[str]:
    """A fresh hidden directory in ``parent`` to build ``name``'s new content in; removed on exit
    (after a successful :func:`replace_dir` or :func:`move_files_in` there is nothing left to remove)."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would follow the directory into place
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(staged: str, target: str) -> None:
    """Put the complete directory ``staged`` at ``target`` (same filesystem), replacing any old one.

    The old directory is renamed to ``<target>.old`` first and removed only once the new one is in
    place, so a crash between the renames leaves one complete version (readers may fall back to
    ``.old``, as the checkpoint does).
    """
    fsync_tree(staged)
    old = target + ".old"
    if os.path.isdir(target):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staged, target)
    fsync_path(os.path.dirname(os.path.abspath(target)))
    shutil.rmtree(old, ignore_errors=True)


def move_files_in(staged: str, target: str, last: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Rename every entry of ``staged`` into ``target``, those with ``last(name)`` after the others; return the names.

    Entries of ``target`` that ``staged`` does not have are kept.  Each rename is atomic, so a
    reader sees every file either old or new; ordering puts the files that make a directory
    usable (weights) last, so a crash midway leaves the old ones beside new metadata.
    """
    fsync_tree(staged)
    os.makedirs(target, exist_ok=True)
    names = sorted(os.listdir(staged), key=lambda n: (last(n), n))
    for name in names:
        src, dst = os.path.join(staged, name), os.path.join(target, name)
        if os.path.isdir(src) and os.path.isdir(dst):
            shutil.rmtree(dst)
        os.replace(src, dst)
    fsync_path(target)
    return names
