"""Atomic writes: whole content or none, the old content kept on failure, stale temporaries cleaned."""

import json
import os
import stat
import sys

import numpy as np
import pytest

from pie_audit import _atomic
from pie_audit._atomic import (
    ALREADY_EXISTS,
    NOT_REPLACEABLE,
    TMP_PREFIX,
    atomic_directory,
    atomic_file,
    remove_stale_temporaries,
    replace_directory,
    write_json,
)
from pie_audit.errors import OutputError


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def accept_txt(entry):
    return entry.suffix == ".txt"


# --- atomic_file ---------------------------------------------------------------------------------


def test_atomic_file_writes_text_and_bytes(tmp_path):
    with atomic_file(tmp_path / "a" / "note.txt") as fh:
        fh.write("héllo")
    with atomic_file(tmp_path / "blob.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "a" / "note.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert names(tmp_path) == ["a", "blob.bin"]


def test_atomic_file_keeps_the_old_content_on_error(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write("half")
        raise RuntimeError
    assert path.read_text() == "old"
    assert names(tmp_path) == ["note.txt"]


def test_atomic_file_gets_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f") as fh:
            fh.write("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_atomic_file_refuses_a_directory(tmp_path):
    with pytest.raises(OutputError, match="is a directory"), atomic_file(tmp_path):
        pass


def test_atomic_file_unwritable_parent(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("")
    with pytest.raises(OutputError, match="cannot write there"), atomic_file(parent / "x"):
        pass


def test_write_json_converts_numpy_and_paths(tmp_path):
    write_json(tmp_path / "r.json", {"a": np.int64(3), "b": np.arange(2), "c": tmp_path})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 3, "b": [0, 1], "c": str(tmp_path)}


# --- atomic_directory ----------------------------------------------------------------------------


def test_atomic_directory_appears_whole(tmp_path):
    final = tmp_path / "seed-0000"
    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(TMP_PREFIX)
        (tmp / "a").write_text("1")
        assert not final.exists()
    assert names(final) == ["a"]
    assert names(tmp_path) == ["seed-0000"]


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_atomic_directory_never_overwrites(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError) as e, atomic_directory(tmp_path / "d"):
        pass
    assert str(e.value) == ALREADY_EXISTS.format(path=tmp_path / "d")


# --- replace_directory ---------------------------------------------------------------------------


def test_replace_directory_creates_and_replaces(tmp_path):
    out = tmp_path / "reports" / "r"
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("old")
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("2")
    assert names(out) == ["a.txt"]
    assert (out / "a.txt").read_text() == "2"
    assert names(out.parent) == ["r"]


def test_replace_directory_keeps_the_old_one_on_error(tmp_path):
    out = tmp_path / "r"
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError
    assert (out / "a.txt").read_text() == "1"
    assert names(tmp_path) == ["r"]


def test_replace_directory_refuses_foreign_content(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError) as e, replace_directory(out, accept=accept_txt, what="report"):
        pytest.fail("must refuse before yielding")
    assert str(e.value) == NOT_REPLACEABLE.format(path=out, entry="thesis.tex", what="report")
    assert names(out) == ["thesis.tex"]
    assert names(tmp_path) == ["r"]


def test_replace_directory_refuses_a_file(tmp_path):
    (tmp_path / "r").write_text("mine")
    with pytest.raises(OutputError, match="not a directory"), replace_directory(
        tmp_path / "r", accept=accept_txt, what="report"
    ):
        pass
    assert (tmp_path / "r").read_text() == "mine"


def test_a_failed_swap_puts_the_old_directory_back(tmp_path, monkeypatch):
    out = tmp_path / "r"
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("old")
    real_rename = os.rename

    def rename(src, dst):
        # Let the old directory be parked, then fail to move the new one in.
        if os.path.basename(os.fspath(src)).startswith(TMP_PREFIX) and os.fspath(dst) == os.fspath(out):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(_atomic.os, "rename", rename)
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)  # a system without the swap
    with pytest.raises(OSError), replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("new")
    monkeypatch.undo()
    assert (out / "a.txt").read_text() == "old"
    assert names(tmp_path) == ["r"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_replacing_swaps_in_one_step_on_linux(tmp_path, monkeypatch):
    out = tmp_path / "r"
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("old")

    def rename(src, dst):
        # Moving the old directory away would leave a moment with no ``out``: never done.
        raise AssertionError(f"rename {src} -> {dst}")

    monkeypatch.setattr(_atomic.os, "rename", rename)
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("new")
    monkeypatch.undo()
    assert (out / "a.txt").read_text() == "new"
    assert names(tmp_path) == ["r"]


def test_temporaries_of_a_killed_replacement_are_cleaned_next_time(tmp_path):
    out = tmp_path / "r"
    (tmp_path / f"{TMP_PREFIX}r-abc123").mkdir()  # as a SIGKILL mid-write leaves them
    (tmp_path / f"{TMP_PREFIX}r-old-xyz").mkdir()
    (tmp_path / f"{TMP_PREFIX}other-1").mkdir()  # another output's: not ours to remove
    with replace_directory(out, accept=accept_txt, what="report") as tmp:
        (tmp / "a.txt").write_text("1")
    assert names(tmp_path) == [f"{TMP_PREFIX}other-1", "r"]


# --- stale temporaries ---------------------------------------------------------------------------


def test_remove_stale_temporaries(tmp_path):
    (tmp_path / f"{TMP_PREFIX}seed-0001-abc").mkdir()
    (tmp_path / f"{TMP_PREFIX}seed-0001-abc" / "model.pt").write_text("half")
    (tmp_path / f"{TMP_PREFIX}run.json-xyz").write_text("half")
    (tmp_path / "seed-0000").mkdir()
    (tmp_path / ".hidden").write_text("mine")
    assert remove_stale_temporaries(tmp_path) == 2
    assert names(tmp_path) == [".hidden", "seed-0000"]


# --- exclusive locks --------------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    from pie_audit._atomic import LOCKED, exclusive_lock

    target = tmp_path / "population"
    target.mkdir()
    # Another process (not a thread: flock is per open file) holds the lock...
    import subprocess

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pie_audit._atomic import exclusive_lock\n"
         f"with exclusive_lock({str(target)!r}):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError) as e, exclusive_lock(target):
            pass
        assert str(e.value) == LOCKED.format(path=target, lock=tmp_path / ".population.pie-audit.lock")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # ...and a killed holder never leaves it stuck.
    with exclusive_lock(target) as lock:
        assert lock == tmp_path / ".population.pie-audit.lock"
