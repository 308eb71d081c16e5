"""Between rollout and update: rewards onto tokens, KL in the reward, advantages.

Advantages are computed on the *global* batch (response tensors gathered from every rank), so whitening
and group statistics do not depend on how prompts were sharded; each rank keeps its own rows.
Shape legend: B sequences, T response width.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from rlkit.algorithms import compute_advantages
from rlkit.algorithms.kl import apply_kl_in_reward
from rlkit.algorithms.sampling import overlong_penalty
from rlkit.batch import Batch
from rlkit.config.schema import AlgorithmConfig
from rlkit.distributed import is_distributed


def scores_on_last_token(scores: Tensor, response_mask: Tensor) -> Tensor:
    """(B,) outcome scores -> (B, T) token-level scores, placed on each response's last valid token (the last
    token the model sampled: in a conversation, environment tokens may sit between and after its turns)."""
    token_scores = torch.zeros_like(response_mask, dtype=torch.float32)
    valid = response_mask != 0
    has_tokens = valid.any(dim=1)
    T = response_mask.shape[1]
    last = T - 1 - valid.flip(1).long().argmax(dim=1)  # argmax finds the first valid token from the right
    rows = torch.arange(len(scores))[has_tokens]
    token_scores[rows, last[has_tokens]] = scores[has_tokens].float()
    return token_scores


def add_overlong_penalty(scores: Tensor, batch: Batch, cfg: AlgorithmConfig, max_new_tokens: int) -> Tensor:
    if cfg.overlong_penalty is None:
        return scores
    lengths = batch["response_mask"].sum(dim=1)
    return scores + overlong_penalty(
        lengths, max_new_tokens, cfg.overlong_penalty.buffer_length, cfg.overlong_penalty.penalty_factor
    )


def token_level_rewards(batch: Batch, cfg: AlgorithmConfig, kl_coef: float) -> tuple[Tensor, float | None]:
    """Scores minus the KL penalty when KL is in the reward; returns the rewards and the mean KL."""
    if not cfg.use_kl_in_reward:
        return batch["token_level_scores"], None
    return apply_kl_in_reward(
        batch["token_level_scores"], batch["old_logprobs"], batch["ref_logprobs"], batch["response_mask"],
        kl_coef, cfg.kl_penalty,
    )


def _gather_rows(tensor: Tensor) -> tuple[Tensor, int]:
    """Concatenate every rank's rows (equal widths); returns the whole and this rank's row offset."""
    if not is_distributed():
        return tensor, 0
    sizes: list = [None] * dist.get_world_size()
    dist.all_gather_object(sizes, len(tensor))
    max_rows = max(sizes)
    padded = torch.zeros((max_rows, *tensor.shape[1:]), dtype=tensor.dtype)
    padded[: len(tensor)] = tensor
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    whole = torch.cat([piece[:size] for piece, size in zip(gathered, sizes)])
    return whole, sum(sizes[: dist.get_rank()])


def global_advantages(batch: Batch, cfg: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """Advantages and returns of this rank's rows, computed over the whole batch of every rank."""
    needed = {"token_level_rewards": batch["token_level_rewards"], "response_mask": batch["response_mask"],
              "group_index": torch.as_tensor(batch["group_index"], dtype=torch.long)}
    if "values" in batch:
        needed["values"] = batch["values"]
    if "reward_baselines" in batch:
        needed["reward_baselines"] = batch["reward_baselines"]
    whole = {}
    offset = 0
    for name, tensor in needed.items():
        whole[name], offset = _gather_rows(tensor.cpu())
    advantages, returns = compute_advantages(
        cfg.adv_estimator,
        whole["token_level_rewards"],
        whole["response_mask"],
        group_index=whole["group_index"].tolist(),
        values=whole.get("values"),
        reward_baselines=whole.get("reward_baselines"),
        gamma=cfg.gamma,
        lam=cfg.lam,
    )
    rows = slice(offset, offset + len(batch))
    return advantages[rows], returns[rows]
