"""`rlkit train [CONFIG] [--engine NAME] [--rollout NAME] [--adv-estimator NAME] [key.path=value ...]`."""

from __future__ import annotations

import click

from rlkit.cli.args import split_config_args


@click.command("train", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
@click.option("--engine", help="Training engine: fsdp2, deepspeed, or a plugin (sets engine.name).")
@click.option("--rollout", help="Rollout engine: hf, vllm, sglang, or a plugin (sets rollout.name).")
@click.option("--adv-estimator", help="Advantage estimator: grpo, gae, drgrpo, ... (sets algorithm.adv_estimator).")
def train_command(args: tuple[str, ...], engine: str | None, rollout: str | None, adv_estimator: str | None) -> None:
    """Train with RL. With no arguments: the embedded default (a tiny model on a built-in task, on the CPU).

    Settings come from CONFIG (YAML), then the flags, then overrides such as trainer.total_steps=10.
    Run under `torchrun --nproc_per_node=N -m rlkit train ...` for several processes; with
    placement.mode=split the last placement.rollout_ranks of them only roll out.
    """
    from rlkit.cli.configs import build_for_command

    config_file, overrides = split_config_args(args)
    flags = {"engine.name": engine, "rollout.name": rollout, "algorithm.adv_estimator": adv_estimator}
    cfg = build_for_command("train", config_file, overrides, flags)

    # Imported after validation: a bad config should fail in a fraction of a second.
    from rlkit.distributed import destroy
    from rlkit.placement import init_placement
    from rlkit.trainer.components import build_rollout_worker
    from rlkit.trainer.rl import RLTrainer

    placement = init_placement(cfg, cfg.trainer.device)
    try:
        if placement.is_trainer:
            RLTrainer(cfg, placement.dist, placement).fit()
        else:  # a rollout rank of a split placement (docs/placement.md)
            build_rollout_worker(cfg, placement).run()
    finally:
        placement.close()
        destroy()
