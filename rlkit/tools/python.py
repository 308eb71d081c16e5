"""The python tool: the model's program runs in a separate Python process with limits, and what it prints comes back.

Each call gets a fresh process (`python -I`, an environment with nothing of the trainer's in it) whose working
directory is a new scratch directory, removed afterwards. Before the program runs, the process limits itself
(`resource.setrlimit`): address space (`memory_mb`), CPU seconds, and the size of any file it writes (its
output included, so printing gigabytes stops at a megabyte), and installs an audit hook (PEP 578) that refuses
sockets, new processes (fork, exec, subprocess, os.system), signals to other processes, ctypes symbol lookups,
and writes, renames and deletions outside the scratch directory. The trainer kills the process group after
`timeout_s` of wall-clock time.

What this is not: a security boundary. Audit hooks see what Python code does through the standard library;
native code (a C extension) can bypass them, and reads of files are not restricted. It keeps an RL policy's
programs from hanging the run, eating its memory, touching the network or the user's files by accident or by
naive intent; code from an adversary belongs in a container or VM (docs/environments.md).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # per file the program writes, its stdout and stderr included
_OUTPUT_READ_BYTES = 64 << 10  # the ToolBox cuts results much shorter anyway

# Run by the child before the program: limits, then the audit hook, then the program (main.py in the scratch dir).
_BOOTSTRAP = r"""
import os, resource, signal, sys
memory_bytes, cpu_seconds, file_bytes = (int(value) for value in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises OSError instead of killing
SCRATCH = os.path.realpath(os.getcwd())
DENIED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "os.kill", "os.killpg", "signal.pthread_kill", "pty.", "ctypes.dlsym")
DENIED_IMPORTS = ("_posixsubprocess",)
PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1,
               "shutil.move": 2, "shutil.copyfile": 2, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
               "os.mkdir": 1, "os.utime": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def inside(path):
    if isinstance(path, int):
        return True  # an open descriptor: it was checked when it was opened
    path = os.fsdecode(path)
    if path == os.devnull:
        return True
    full = os.path.normpath(os.path.join(SCRATCH, path))
    return full == SCRATCH or full.startswith(SCRATCH + os.sep)

def hook(event, args):
    if event.startswith(DENIED) or (event == "import" and args[0] in DENIED_IMPORTS):
        what = f"import {args[0]}" if event == "import" else event
        raise PermissionError(f"the python tool does not allow {what} (no network, no processes)")
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if writes and not inside(path):
            raise PermissionError(f"the python tool writes only inside its working directory, not {path}")
    elif event in PATH_EVENTS and not all(inside(path) for path in args[:PATH_EVENTS[event]] if path is not None):
        raise PermissionError(f"the python tool changes files only inside its working directory ({event})")

sys.addaudithook(hook)
del hook
with open("main.py") as source:
    program = compile(source.read(), "main.py", "exec")
exec(program, {"__name__": "__main__"})
"""


def python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> str:
    """Run a Python program and return what it prints. Nothing else comes back: print the values you need.

    Args:
        code: The Python source code to run, as a whole program.
    """
    return run_python(code, timeout_s=timeout_s, memory_mb=memory_mb)


class PythonToolError(RuntimeError):
    pass


def run_python(code: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> str:
    """The program's standard output; PythonToolError (with the end of its traceback) when it fails, runs past
    `timeout_s` or is stopped by a limit. The scratch directory is removed whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="rlkit-python-"))
    try:
        (scratch / "main.py").write_text(code)
        stdout_path, stderr_path = scratch / ".stdout", scratch / ".stderr"
        limits = [str(memory_mb << 20), str(math.ceil(timeout_s) + 1), str(MAX_FILE_BYTES)]
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOTSTRAP, *limits], cwd=scratch, env=child_environment(scratch),
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
            )
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the program and anything it left
                process.wait()
                raise PythonToolError(f"the program ran longer than {timeout_s:g} s and was stopped") from None
        output, errors = read_head(stdout_path), read_head(stderr_path)
        if returncode == 0:
            return output if output.strip() else "(the program printed nothing; print the values you need)"
        if returncode < 0:
            name = signal.Signals(-returncode).name
            reason = " (CPU time limit)" if name == "SIGXCPU" else ""
            raise PythonToolError(f"the program was stopped by {name}{reason}" + printed(output))
        raise PythonToolError(f"the program failed:\n{last_lines(errors)}" + printed(output))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def child_environment(scratch: Path) -> dict[str, str]:
    """Nothing of the trainer's environment: no credentials, no proxies, one thread per numeric library."""
    return {"PATH": os.defpath, "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def read_head(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(_OUTPUT_READ_BYTES).decode("utf-8", errors="replace")


def last_lines(text: str, num_lines: int = 12) -> str:
    """The end of a traceback, where it failed and why, without the frames of the bootstrap."""
    lines = [line for line in text.rstrip().splitlines() if not line.lstrip().startswith('File "<string>"')]
    return "\n".join(lines[-num_lines:])


def printed(output: str, num_chars: int = 300) -> str:
    """A failure's note of what the program had printed (its end)."""
    if not output.strip():
        return ""
    cut = "..." if len(output) > num_chars else ""
    return f"\nbefore that it printed: {cut}{output[-num_chars:]}"
