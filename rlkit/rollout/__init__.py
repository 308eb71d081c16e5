"""Rollout engines: hf, vllm and sglang behind rlkit.rollout.base.RolloutEngine."""
