"""algorithm.reuse_rollout_logprobs: the rollout's log-probs stand in for the old-logprob pass, on-policy only."""

import json

import pytest

from helpers import small_run
from rlkit.config import RunConfig, build_config
from rlkit.engines.base import DistInfo
from rlkit.errors import ConfigError
from rlkit.trainer.rl import RLTrainer

# One optimizer step per training step (mini_batch_size == train_batch_size == 8): the on-policy case.
ON_POLICY = ("trainer.total_steps=1", "data.val_files=[]", "algorithm.mini_batch_size=8", "engine.precision=fp32")


def first_step(tiny_model, output_dir, reuse: bool) -> dict:
    cfg = build_config(RunConfig, None, small_run(tiny_model, output_dir, *ON_POLICY,
                                                  f"algorithm.reuse_rollout_logprobs={str(reuse).lower()}"))
    RLTrainer(cfg, DistInfo()).fit()
    return json.loads((output_dir / "metrics.jsonl").read_text().splitlines()[0])


def test_reused_logprobs_give_the_same_loss(tiny_model, tmp_path):
    computed = first_step(tiny_model, tmp_path / "off", reuse=False)
    reused = first_step(tiny_model, tmp_path / "on", reuse=True)
    assert "time/old_logprobs" in computed and "time/old_logprobs" not in reused
    # The hf rollout in fp32 samples with the trainer's weights: its log-probs are the trainer's up to float noise.
    assert computed["rollout/logprob_abs_diff"] < 1e-5
    for key in ("actor_loss", "pg_loss", "grad_norm", "entropy"):
        assert reused[key] == pytest.approx(computed[key], abs=1e-5), key


@pytest.mark.parametrize("off_policy", ["algorithm.ppo_epochs=2", "algorithm.mini_batch_size=4"])
def test_reuse_needs_an_on_policy_update(tiny_model, tmp_path, off_policy):
    overrides = small_run(tiny_model, tmp_path, *ON_POLICY, "algorithm.reuse_rollout_logprobs=true", off_policy)
    with pytest.raises(ConfigError, match="reuse_rollout_logprobs needs an on-policy update"):
        build_config(RunConfig, None, overrides)
