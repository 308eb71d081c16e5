"""The python tool: a separate process with a time limit, a memory limit, no network, no new processes, writes
only in a scratch directory that is removed afterwards, and nothing of the trainer's environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from rlkit.tools.python import PythonToolError, python


def run(code: str, **limits) -> str:
    return python(code, **{"timeout_s": 5.0, "memory_mb": 512, **limits})


def test_a_program_prints_its_result():
    assert run("print(sum(range(10)))") == "45\n"
    assert "printed nothing" in run("x = 1")


@pytest.mark.parametrize("code, message", [
    ("def f():\n    raise ValueError('boom')\nf()", "ValueError: boom"),
    ("import socket\nsocket.socket()", "does not allow socket.__new__"),
    ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')", "does not allow socket"),
    ("import subprocess\nsubprocess.run(['ls'])", "does not allow"),
    ("import os\nos.system('ls')", "does not allow os.system"),
    ("import os\nos.fork()", "does not allow os.fork"),
    ("import os\nos.kill(os.getppid(), 9)", "does not allow os.kill"),
    ("import ctypes\nctypes.CDLL(None).getpid()", "does not allow ctypes.dlsym"),
    ("bytearray(2 * 1024 ** 3)", "MemoryError"),
    ("print('x' * 3_000_000)", "File too large"),
])
def test_what_a_program_may_not_do(code, message):
    with pytest.raises(PythonToolError, match=message):
        run(code)


def test_writes_stay_in_the_scratch_directory(tmp_path):
    outside = tmp_path / "escape.txt"
    with pytest.raises(PythonToolError, match="writes only inside its working directory"):
        run(f"open({str(outside)!r}, 'w').write('x')")
    victim = tmp_path / "keep.txt"
    victim.write_text("mine")
    with pytest.raises(PythonToolError, match="changes files only inside its working directory"):
        run(f"import os\nos.remove({str(victim)!r})")
    assert not outside.exists() and victim.read_text() == "mine"
    assert run("open('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())") == "hi\n"


def test_a_hang_is_stopped_and_the_scratch_directory_goes():
    before = set(Path(tempfile.gettempdir()).glob("rlkit-python-*"))
    with pytest.raises(PythonToolError, match="ran longer than 1 s"):
        run("while True:\n    pass", timeout_s=1.0)
    run("print(1)")
    assert set(Path(tempfile.gettempdir()).glob("rlkit-python-*")) == before


def test_the_environment_is_empty(monkeypatch):
    monkeypatch.setenv("RLKIT_SECRET_TOKEN", "hunter2")
    names = run("import os\nprint(sorted(os.environ))")
    assert "RLKIT_SECRET_TOKEN" not in names and "HOME" in names
    assert os.environ["RLKIT_SECRET_TOKEN"] == "hunter2"
