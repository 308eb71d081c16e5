"""Run under torchrun: start a process the way SGLang starts its scheduler (spawned, inheriting the
environment) that builds its own process group on a free tcp:// port, with and without
`sglang_args.scheduler_environment`. Prints one line per case: "<case> exit <code>"."""

import multiprocessing
import os
import socket
import sys
from datetime import timedelta

import torch.distributed as dist

from rlkit.rollout.sglang_args import scheduler_environment

STORE_TIMEOUT = timedelta(seconds=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scheduler(port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0,
                            timeout=STORE_TIMEOUT)
    dist.destroy_process_group()


def start_scheduler() -> int:
    process = multiprocessing.get_context("spawn").Process(target=scheduler, args=(free_port(),))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        return -1
    return process.exitcode


if __name__ == "__main__":
    assert os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True", "run me under torchrun"
    print("inherited exit", start_scheduler(), flush=True)
    with scheduler_environment(os.environ):
        print("scheduler_environment exit", start_scheduler(), flush=True)
    print("restored", os.environ.get("TORCHELASTIC_USE_AGENT_STORE"), flush=True)
    sys.exit(0)
