"""`rlkit sft [CONFIG] [--engine NAME] [key.path=value ...]`."""

from __future__ import annotations

import click

from rlkit.cli.args import split_config_args


@click.command("sft", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@click.option("--engine", help="Training engine: fsdp2, deepspeed, or a plugin (sets engine.name).")
def sft_command(args: tuple[str, ...], engine: str | None) -> None:
    """Supervised fine-tuning. With no arguments: the tiny model learns the built-in letters task on the CPU.

    Settings come from CONFIG (YAML, `kind: sft`), then the flags, then overrides such as
    data.train_batch_size=32. Run under `torchrun --nproc_per_node=N -m rlkit sft ...` for several processes.
    Checkpoints land in trainer.output_dir/checkpoints; `rlkit generate` and `rlkit export` read them.
    """
    from rlkit.cli.configs import build_for_command
    from rlkit.distributed import destroy, init_distributed
    from rlkit.trainer.sft import SFTTrainer

    config_file, overrides = split_config_args(args)
    cfg = build_for_command("sft", config_file, overrides, {"engine.name": engine})
    dist = init_distributed(cfg.trainer.device)
    try:
        SFTTrainer(cfg, dist).fit()
    finally:
        destroy()
