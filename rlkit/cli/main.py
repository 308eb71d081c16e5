"""The `rlkit` command. User errors print one line and exit with code 2; `--debug` shows the traceback.
A run stopped on request (a preemption signal, Ctrl-C) prints where it stopped and exits with its own code."""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from rlkit.errors import RlkitError, RunStopped

USER_ERROR_EXIT_CODE = 2


class RlkitGroup(click.Group):
    """Turns RlkitError (and pydantic/click usage errors) into a clean message and exit code 2, and RunStopped
    into its message (on rank 0) and exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RlkitError as error:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {error}", err=True)
            sys.exit(USER_ERROR_EXIT_CODE)
        except RunStopped as stopped:
            if os.environ.get("RANK", "0") == "0":
                click.echo(str(stopped), err=True)
            sys.exit(stopped.exit_code)


@click.group(cls=RlkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors.")
@click.option("--local_rank", "--local-rank", "local_rank", type=int, default=None, hidden=True,
              help="Set by the deepspeed launcher; the LOCAL_RANK environment variable carries the same.")
@click.version_option(package_name="rlkit")
@click.pass_context
def cli(ctx: click.Context, debug: bool, local_rank: int | None) -> None:
    """RL post-training for LLMs: `rlkit train` with no arguments runs a small built-in task on the CPU."""
    ctx.ensure_object(dict)
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    ctx.obj["debug"] = debug or os.environ.get("RLKIT_DEBUG") == "1"
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "torch.distributed", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers' per-file progress bars ("Loading weights") drown the training line.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # transformers imports DeepSpeed when it is installed; on a CPU machine say so up front instead of a warning.
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def _register_commands() -> None:
    from rlkit.cli.bench import bench_command
    from rlkit.cli.configs import config_group, validate_command
    from rlkit.cli.data import data_group
    from rlkit.cli.eval import eval_command
    from rlkit.cli.export import export_command
    from rlkit.cli.generate import generate_command
    from rlkit.cli.listing import list_command
    from rlkit.cli.model import model_group
    from rlkit.cli.plot import plot_command
    from rlkit.cli.sft import sft_command
    from rlkit.cli.train import train_command

    for command in (train_command, sft_command, generate_command, eval_command, validate_command, config_group,
                    list_command, export_command, data_group, plot_command, bench_command, model_group):
        cli.add_command(command)


_register_commands()


def main() -> None:
    cli(prog_name="rlkit")


if __name__ == "__main__":
    main()
