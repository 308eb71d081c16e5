"""The two switches that skip the old-logprob pass, on-policy only: algorithm.reuse_rollout_logprobs (the
rollout's log-probs stand in) and algorithm.old_logprobs_from_update (the update's own, detached)."""

import json

import pytest

from helpers import small_run
from rlkit.config import RunConfig, build_config
from rlkit.distributed import DistInfo
from rlkit.errors import ConfigError
from rlkit.trainer.rl import RLTrainer

# One optimizer step per training step (mini_batch_size == train_batch_size == 8): the on-policy case.
ON_POLICY = ("trainer.total_steps=1", "data.val_files=[]", "algorithm.mini_batch_size=8", "engine.precision=fp32")
FROM_UPDATE = "algorithm.old_logprobs_from_update=true"


def first_step(tiny_model, output_dir, *switches: str) -> dict:
    cfg = build_config(RunConfig, None, small_run(tiny_model, output_dir, *ON_POLICY, *switches))
    RLTrainer(cfg, DistInfo()).fit()
    return json.loads((output_dir / "metrics.jsonl").read_text().splitlines()[0])


def test_reused_logprobs_give_the_same_loss(tiny_model, tmp_path):
    computed = first_step(tiny_model, tmp_path / "off")
    reused = first_step(tiny_model, tmp_path / "on", "algorithm.reuse_rollout_logprobs=true")
    assert "time/old_logprobs" in computed and "time/old_logprobs" not in reused
    # The hf rollout in fp32 samples with the trainer's weights: its log-probs are the trainer's up to float noise.
    assert computed["rollout/logprob_abs_diff"] < 1e-5
    for key in ("actor_loss", "pg_loss", "grad_norm", "entropy"):
        assert reused[key] == pytest.approx(computed[key], abs=1e-5), key


def test_logprobs_from_the_update_give_the_same_loss_and_metrics(tiny_model, tmp_path):
    # With a KL loss, so that the reference pass runs and the `kl` metric (old - ref) is logged too.
    computed = first_step(tiny_model, tmp_path / "off", "algorithm.use_kl_loss=true")
    from_update = first_step(tiny_model, tmp_path / "on", "algorithm.use_kl_loss=true", FROM_UPDATE)
    assert "time/old_logprobs" in computed and "time/old_logprobs" not in from_update
    assert "time/ref_logprobs" in from_update
    # The update's forward runs on the weights before the optimizer step: the same numbers as the old pass, so
    # the same loss and gradient; kl and rollout/logprob_abs_diff now come from that forward.
    for key in ("actor_loss", "pg_loss", "grad_norm", "entropy", "kl_loss", "kl", "rollout/logprob_abs_diff"):
        assert from_update[key] == pytest.approx(computed[key], abs=1e-5), key
    assert from_update["pg_clipfrac"] == 0.0 and from_update["ppo_kl"] == 0.0  # the ratio is exactly 1


@pytest.mark.parametrize("switch", ["algorithm.reuse_rollout_logprobs=true", FROM_UPDATE])
@pytest.mark.parametrize("off_policy", ["algorithm.ppo_epochs=2", "algorithm.mini_batch_size=4"])
def test_skipping_the_pass_needs_an_on_policy_update(tiny_model, tmp_path, switch, off_policy):
    overrides = small_run(tiny_model, tmp_path, *ON_POLICY, switch, off_policy)
    name = switch.split("=")[0]
    with pytest.raises(ConfigError, match=f"{name} needs an on-policy update: set algorithm.ppo_epochs=1 and "
                                          r"algorithm.mini_batch_size=8 \(= data.train_batch_size\)"):
        build_config(RunConfig, None, overrides)


@pytest.mark.parametrize(
    "other, why, fix",
    [
        ("algorithm.reuse_rollout_logprobs=true",
         "algorithm.old_logprobs_from_update and algorithm.reuse_rollout_logprobs both replace the old log-prob pass",
         "pick one and set the other to false"),
        ("algorithm.use_kl_in_reward=true",
         "cannot be combined with algorithm.use_kl_in_reward, which needs the old log-probs before the update",
         "set algorithm.old_logprobs_from_update=false, or put the KL in the loss (algorithm.use_kl_loss=true)"),
        ("algorithm.rollout_is_cap=2.0",
         "cannot be combined with algorithm.rollout_is_cap, whose weights compare the old log-probs with the rollout's",
         "set algorithm.old_logprobs_from_update=false or algorithm.rollout_is_cap=null"),
    ],
)
def test_logprobs_from_the_update_refuse_what_needs_the_old_pass(tiny_model, tmp_path, other, why, fix):
    with pytest.raises(ConfigError) as error:
        build_config(RunConfig, None, small_run(tiny_model, tmp_path, *ON_POLICY, FROM_UPDATE, other))
    assert why in str(error.value) and fix in str(error.value)
