"""The training-engine interface. Engines run forward/backward with a loss the algorithm supplies and know
nothing of the algorithm; the trainer does not know which engine it runs.

Shape legend: B sequences, T response width (see rlkit.batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from rlkit.batch import Batch
from rlkit.config.schema import LoraConfig, OptimConfig
from rlkit.distributed import DistInfo  # noqa: F401  re-exported: engines are built with one


Role = Literal["actor", "critic", "ref"]


class ModelOutput(NamedTuple):
    """Per-token outputs over the response positions, (B, T) each; None when not asked for."""

    logprobs: Tensor | None = None
    entropy: Tensor | None = None
    values: Tensor | None = None


# loss_fn(output, micro_batch) -> (loss, metrics). The loss is the micro-batch's share of the *global*
# mini-batch loss (normalised by global token or sequence counts), so shares add up over micro-batches and
# ranks; engines sum gradients accordingly. A metric is a float or a detached 0-dim tensor; engines sum them
# over micro-batches and return floats, reading the tensors once (a read per micro-batch would stall the GPU).
LossFn = Callable[[ModelOutput, Batch], tuple[Tensor, dict[str, Tensor | float]]]


@dataclass(frozen=True)
class EngineSpec:
    """What an engine builds, resolved by the trainer from the run config."""

    role: Role
    model_path: str  # a local Hugging Face folder
    optim: OptimConfig | None = None  # None: frozen (the reference)
    lora: LoraConfig | None = None
    trust_remote_code: bool = False
    total_optimizer_steps: int = 1  # for the learning-rate schedule
    temperature: float = 1.0  # logits are divided by it before log-softmax (the rollout's sampling temperature)
    seed: int = 1


@runtime_checkable
class TrainEngine(Protocol):
    """One model (actor with optimizer, critic with value head and optimizer, or frozen reference).

    `micro_batch_size` counts sequences per micro-batch, unless the engine has a token budget
    (`max_tokens_per_micro_batch` in its config or from `apply_memory_plan`, rlkit.engines.micro_batches), which
    then forms the micro-batches.
    """

    role: Role

    def apply_memory_plan(self, *, max_tokens_per_micro_batch: int | None, gradient_checkpointing: bool) -> None:
        """Take the token budget (None: micro_batch_size sequences) and activation checkpointing a run resolves
        once its engines are built and the rollout engine sleeps (rlkit.trainer.speed); they replace the config's.
        Checkpointing applies to an engine that trains."""
        ...

    def compute_logprobs(
        self, batch: Batch, *, micro_batch_size: int, with_entropy: bool = False, base_model: bool = False
    ) -> ModelOutput:
        """Log-probs (and entropy) of batch's response tokens under the current weights, no grad. (B, T).

        base_model=True disables LoRA adapters: the reference policy of a LoRA run, with no second copy.
        """
        ...

    def compute_values(self, batch: Batch, *, micro_batch_size: int) -> Tensor:
        """Critic values at the response positions, no grad. (B, T)."""
        ...

    def forward_backward(
        self, batch: Batch, loss_fn: LossFn, *, micro_batch_size: int, entropy_grad: bool = True
    ) -> dict[str, float]:
        """Accumulate gradients of loss_fn over micro-batches of `batch`; returns summed metrics.

        The actor hands loss_fn the entropy too; `entropy_grad=False` says the loss only reports it, so it
        comes detached and its backward is skipped. The critic ignores it.
        """
        ...

    def optimizer_step(self) -> dict[str, float]:
        """Clip, step, schedule and zero grads. Returns grad_norm and lr. Skips a non-finite step."""
        ...

    def full_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Full (unsharded) weights in Hugging Face names, one tensor at a time; collective: every rank calls it."""
        ...

    def save(self, directory: Path) -> None:
        """Write this engine's model, optimizer and scheduler state (collective)."""
        ...

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote (collective)."""
        ...

    def export_hf(self, directory: Path) -> None:
        """Write a Hugging Face folder (safetensors + config) on rank 0 (collective)."""
        ...
