"""File helpers (files.py): the standard library only, used for keys, configs and the CA index."""

import os
import stat

import pytest
from vpnfleet.shared import files


def test_write_file_atomic_sets_the_mode_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "secret.key"
    files.write_file_atomic(str(path), "first\n", 0o600)
    files.write_file_atomic(str(path), b"second\n", 0o600)
    assert path.read_bytes() == b"second\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["secret.key"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "index.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        files.write_file_atomic(str(path), 12345)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["index.json"]


def test_read_bytes_tells_a_missing_file_from_an_unreadable_one(tmp_path):
    assert files.read_bytes(str(tmp_path / "missing")) is None
    with pytest.raises(IsADirectoryError):
        files.read_bytes(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing"):
        files.read_file(str(tmp_path / "missing"))
