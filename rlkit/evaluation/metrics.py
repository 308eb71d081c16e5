"""The numbers `rlkit eval` reports, as pure functions of per-response results.

Responses come prompt-major, `num_samples` per prompt: [p0 s0, p0 s1, ..., p1 s0, ...].

- accuracy: the mean over responses of `correct` (rlkit.rewards.base.correctness: the reward's `acc`, else
  score >= 1), which equals the mean over prompts of each prompt's fraction correct.
- its 95% confidence interval: the Wilson score interval (Wilson 1927) with the number of *prompts* as the
  sample size and each prompt's fraction correct as its outcome. With one sample per prompt this is the
  textbook Wilson interval of a binomial proportion; with several, responses to one prompt are not
  independent, and a fraction in [0, 1] varies no more than a 0/1 outcome of the same mean, so the interval
  is conservative (at least as wide as it needs to be).
- pass@k: the unbiased estimator of Chen et al. 2021 (the Codex paper), 1 - C(n - c, k) / C(n, k) per prompt
  with n samples of which c are correct, averaged over prompts; reported for k = 1, 2, 4, ... and n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The probability that at least one of k responses drawn without replacement from num_samples (of which
    num_correct are correct) is correct: 1 - C(n - c, k) / C(n, k), as a product to stay exact for large n."""
    if not 1 <= k <= num_samples or not 0 <= num_correct <= num_samples:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (got n={num_samples}, c={num_correct}, k={k})")
    if num_samples - num_correct < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i)
    miss = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def wilson_interval(proportion: float, num_trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (low, high) of a proportion observed over num_trials trials."""
    if num_trials < 1:
        raise ValueError("the Wilson interval needs at least one trial")
    denominator = 1.0 + z * z / num_trials
    center = (proportion + z * z / (2 * num_trials)) / denominator
    half = z / denominator * math.sqrt(proportion * (1 - proportion) / num_trials + z * z / (4 * num_trials**2))
    return max(0.0, center - half), min(1.0, center + half)


def pass_k_values(num_samples: int) -> list[int]:
    """The k reported for n samples a prompt: 1, 2, 4, ... below n, and n."""
    values, k = [], 1
    while k < num_samples:
        values.append(k)
        k *= 2
    return values + [num_samples]


@dataclass(frozen=True)
class EvalSummary:
    """The summary of an evaluation (see the module docstring for each number)."""

    num_prompts: int
    num_samples: int  # per prompt
    accuracy: float
    accuracy_ci95: tuple[float, float]
    reward_mean: float
    pass_at_k: dict[int, float]  # empty with one sample a prompt
    response_length_mean: float  # tokens
    truncation_rate: float  # fraction of responses cut at max_new_tokens

    def as_dict(self) -> dict:
        return {
            "num_prompts": self.num_prompts, "num_samples": self.num_samples, "accuracy": self.accuracy,
            "accuracy_ci95": list(self.accuracy_ci95), "accuracy_ci_method": "wilson", "reward_mean": self.reward_mean,
            "pass_at_k": {str(k): value for k, value in self.pass_at_k.items()},
            "response_length_mean": self.response_length_mean, "truncation_rate": self.truncation_rate,
        }


def summarize(
    scores: list[float], correct: list[float], lengths: list[int], truncated: list[bool], num_samples: int
) -> EvalSummary:
    """The summary of prompt-major per-response results, `num_samples` responses a prompt."""
    num_responses = len(scores)
    if num_responses == 0 or num_responses % num_samples:
        raise ValueError(f"{num_responses} responses do not make whole groups of {num_samples}")
    if not len(correct) == len(lengths) == len(truncated) == num_responses:
        raise ValueError("scores, correct, lengths and truncated must have one entry per response")
    num_prompts = num_responses // num_samples
    groups = [correct[i * num_samples:(i + 1) * num_samples] for i in range(num_prompts)]
    per_prompt = [sum(group) / num_samples for group in groups]
    accuracy = sum(per_prompt) / num_prompts
    pass_at = {}
    if num_samples > 1:
        counts = [round(sum(group)) for group in groups]
        pass_at = {k: sum(pass_at_k(num_samples, c, k) for c in counts) / num_prompts
                   for k in pass_k_values(num_samples)}
    return EvalSummary(
        num_prompts=num_prompts,
        num_samples=num_samples,
        accuracy=accuracy,
        accuracy_ci95=wilson_interval(accuracy, num_prompts),
        reward_mean=sum(scores) / num_responses,
        pass_at_k=pass_at,
        response_length_mean=sum(lengths) / num_responses,
        truncation_rate=sum(truncated) / num_responses,
    )
