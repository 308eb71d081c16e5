"""The DeepSpeed training engine: one actor, critic or reference model under ZeRO stage 1, 2 or 3.

Shape legend: B sequences, T response width (see rlkit.batch).

Same contract as the FSDP2 engine (rlkit/engines/base.py, docs/engines.md): batches arrive on CPU, each
micro-batch moves to the device for its pass, `compute_logprobs` / `compute_values` return fp32 (B, T) on
CPU, and the loss function returns each micro-batch's share of the global mini-batch loss.

Gradient accumulation is rlkit's, not DeepSpeed's: `forward_backward` calls `engine.backward` once per
micro-batch and only `optimizer_step` calls `engine.step()`. With `managed_gradient_accumulation: false`
DeepSpeed treats each `step()` as the accumulation boundary whatever the number of backward passes before
it (ZeRO-1 reduces the summed gradients there; ZeRO-2/3 reduce each backward into their partitions and
finalise there), and with `gradient_accumulation_steps: 1` it never divides the loss (ds_config.py).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from rlkit import distributed
from rlkit.batch import Batch
from rlkit.config.engines import EngineConfig
from rlkit.engines import passes
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec, LossFn, ModelOutput
from rlkit.engines.building import (
    apply_activation_checkpointing,
    build_scorer,
    compile_decoder_layers,
    compute_dtype,
    decoder_layers,
    set_activation_checkpointing,
)
from rlkit.engines.deepspeed import state
from rlkit.engines.deepspeed.ds_config import build_ds_config, reference_zero_stage
from rlkit.engines.deepspeed.options import DeepSpeedOptions
from rlkit.engines.micro_batches import MicroBatching
from rlkit.engines.optim import build_optimizer, build_scheduler
from rlkit.errors import ConfigError, PluginError
from rlkit.models.lora import hf_model_of, is_peft_model

# DeepSpeed 0.19 calls collectives that torch 2.13 deprecates, on every step: nothing for a user to act on
warnings.filterwarnings(
    "ignore",
    message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
    category=FutureWarning,
)


class DeepSpeedEngine:
    """TrainEngine over DeepSpeed ZeRO (see rlkit.engines.base.TrainEngine for the contract of each method)."""

    def __init__(self, config: EngineConfig, options: DeepSpeedOptions, spec: EngineSpec, dist: DistInfo):
        """`config`: the options every engine shares (engine.*); `options`: DeepSpeed's own (engine.deepspeed.*);
        both as the run resolved them (rlkit.trainer.speed; an `auto` left in them is its fixed default)."""
        import deepspeed

        config, options = config.resolve_auto(), options.resolve_auto()
        if spec.role in ("actor", "critic") and spec.optim is None:
            raise ConfigError(f"the {spec.role} engine needs an optimizer config (EngineSpec.optim is None)")
        check_deepspeed_version()
        self.role = spec.role
        self.config = config
        self.options = options
        self.spec = spec
        self.dist = dist
        self.device = torch.device(dist.device)
        self.batching = MicroBatching.of(config)
        self.compute_dtype = compute_dtype(config, dist.device)
        self.trainable = spec.role != "ref"
        self.zero_stage = reference_zero_stage(options, dist.world_size) if spec.role == "ref" else options.zero_stage

        ensure_process_group(dist)  # before deepspeed.initialize, which would look for MPI otherwise
        self.scorer = build_scorer(spec, config, reference_dtype=None)  # fp32: DeepSpeed casts it itself
        if config.gradient_checkpointing and self.trainable:
            apply_activation_checkpointing(hf_model_of(self.scorer.model))
        if config.torch_compile:  # before deepspeed.initialize: its hooks stay outside the compiled forwards
            compile_decoder_layers(self.scorer)
        if self.zero_stage == 3 and spec.lora is None:  # before deepspeed.initialize, which installs the hooks
            gather_per_decoder_layer(self.scorer)
        self.optimizer = self.scheduler = None
        # taken before deepspeed.initialize casts the module to bf16/fp16 and builds its masters from the cast
        fp32_weights = state.weights_the_cast_rounds(self.scorer, self.compute_dtype) if self.trainable else {}
        if self.trainable:
            self.optimizer = self._build_optimizer()
            # the schedule drives the optimizer's own param groups, which ZeRO keeps (it swaps their params)
            self.scheduler = build_scheduler(self.optimizer, spec.optim, spec.total_optimizer_steps)
        ds_config = build_ds_config(
            options, role=spec.role, optim=spec.optim, world_size=dist.world_size,
            compute_dtype=self.compute_dtype, on_cuda=self.device.type == "cuda",
        )
        self.ds_engine, *_ = deepspeed.initialize(
            model=self.scorer, optimizer=self.optimizer, config=ds_config, dist_init_required=False
        )
        if self.trainable:
            state.init_optimizer_state(self.optimizer, self.ds_engine.optimizer)
            state.restore_fp32_weights(self.scorer, fp32_weights)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """torch's AdamW (rlkit/engines/optim.py), or DeepSpeed's compiled Adam in AdamW mode: FusedAdam where
        the optimizer state lives on the GPU, DeepSpeedCPUAdam where it lives on CPU."""
        params = [param for param in self.scorer.parameters() if param.requires_grad]
        optim = self.spec.optim
        if self.options.optimizer_impl == "torch":
            return build_optimizer(params, optim)
        from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

        hyper = dict(lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)
        if self.device.type == "cpu" or self.options.offload_optimizer:
            return DeepSpeedCPUAdam(params, adamw_mode=True, **hyper)
        return FusedAdam(params, adam_w_mode=True, **hyper)

    def apply_memory_plan(self, *, max_tokens_per_micro_batch: int | None, gradient_checkpointing: bool) -> None:
        self.batching = replace(self.batching, max_tokens=max_tokens_per_micro_batch)
        if self.trainable:
            set_activation_checkpointing(hf_model_of(self.scorer.model), gradient_checkpointing)

    # -- forward passes ---------------------------------------------------------------------------
    def compute_logprobs(
        self, batch: Batch, *, micro_batch_size: int, with_entropy: bool = False, base_model: bool = False
    ) -> ModelOutput:
        assert self.role != "critic", "the critic has no log-probs"
        adapters = passes.adapters_off(self.scorer.model, base_model)
        with self._eval_pass(), adapters:
            return passes.logprobs_of(
                self.ds_engine, batch, self.device, micro_batch_size=micro_batch_size, with_entropy=with_entropy,
                batching=self.batching,
            )

    def compute_values(self, batch: Batch, *, micro_batch_size: int) -> Tensor:
        assert self.role == "critic", f"the {self.role} has no values"
        with self._eval_pass():
            return passes.values_of(
                self.ds_engine, batch, self.device, micro_batch_size=micro_batch_size, batching=self.batching
            )

    def forward_backward(
        self, batch: Batch, loss_fn: LossFn, *, micro_batch_size: int, entropy_grad: bool = True
    ) -> dict[str, float]:
        """Every rank must run the same number of micro-batches: each backward is a collective."""
        assert self.trainable, "the reference model is frozen"
        self.ds_engine.train()
        return passes.accumulate_gradients(
            self.ds_engine, batch, loss_fn, self.device, micro_batch_size=micro_batch_size,
            critic=self.role == "critic", backward=self._backward, batching=self.batching, entropy_grad=entropy_grad,
        )

    def _backward(self, loss: Tensor) -> None:
        # loss is this micro-batch's share of the global loss. Gradients add up over backward passes, and
        # DeepSpeed averages them over the data-parallel ranks at the boundary: scaling by the world size
        # makes the update the gradient of the global loss. No 1/accumulation-steps factor: see ds_config.py.
        self.ds_engine.backward(loss * self.dist.world_size, scale_wrt_gas=False)

    @contextmanager
    def _eval_pass(self) -> Iterator[None]:
        with torch.no_grad():
            self.ds_engine.eval()
            yield

    # -- optimizer ---------------------------------------------------------------------------------
    def optimizer_step(self) -> dict[str, float]:
        """DeepSpeed reduces, measures the global norm, clips (gradient_clipping, torch's rule), steps AdamW
        and zeroes the gradients; with a non-finite norm it zeroes them and counts a skipped step instead."""
        assert self.optimizer is not None, "the reference model has no optimizer"
        skipped_before = self.ds_engine.skipped_steps
        lr = self.optimizer.param_groups[0]["lr"]
        self.ds_engine.step()
        if self.ds_engine.skipped_steps != skipped_before:
            return {"grad_norm": float("nan"), "skipped": 1.0}
        self.scheduler.step()
        return {"grad_norm": float(self.ds_engine.get_global_grad_norm()), "lr": lr, "skipped": 0.0}

    # -- weights -----------------------------------------------------------------------------------
    def full_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Full tensors in Hugging Face names on the engine's device, one at a time: fp32 master weights for
        what trains, the stored dtype for the rest (a bf16 reference or LoRA base: bf16). Collective."""
        yield from state.full_weights(self.scorer)

    def save(self, directory: Path) -> None:
        state.save_checkpoint(self.scorer, self.optimizer, self.scheduler, directory, is_main=self.dist.is_main)

    def load(self, directory: Path) -> None:
        state.load_checkpoint(
            self.scorer, self.optimizer, self.scheduler, directory, is_main=self.dist.is_main, device=self.device
        )

    def export_hf(self, directory: Path) -> None:
        save_adapter = self.role == "actor" and is_peft_model(self.scorer.model)
        state.export_hf(self.scorer, directory, is_main=self.dist.is_main, save_adapter=save_adapter)

    # -- placement ---------------------------------------------------------------------------------
    def offload(self) -> None:
        """Parameters, master weights, gradients and optimizer state to CPU with DeepSpeed's `offload_states`
        (with offload_optimizer, only what is still on the GPU). A no-op on CPU, for the reference (offload_ref
        keeps it on CPU), with offload_param, and for bf16 ZeRO-1, whose BF16_Optimizer cannot move its states."""
        if self._can_move_states():
            self.ds_engine.offload_states()
            torch.cuda.empty_cache()

    def onload(self) -> None:
        if self._can_move_states():
            self.ds_engine.reload_states()
            state.link_optimizer_state(self.ds_engine.optimizer)  # reload_states replaced the state tensors

    def _can_move_states(self) -> bool:
        return (
            self.device.type == "cuda"
            and self.trainable
            and not self.options.offload_param
            and hasattr(self.ds_engine.optimizer, "offload_states")
        )


def gather_per_decoder_layer(scorer: torch.nn.Module) -> None:
    """Make every decoder layer a ZeRO-3 leaf module: its parameters are gathered and released together, in one
    hook pair around the layer, and its gradients reduced once after its backward, as FSDP2 shards per layer.

    ZeRO-3 otherwise hooks every submodule (each projection, norm, activation) with a fetch before and a
    release after each forward and backward, Python work per module and micro-batch; and with
    engine.torch_compile those hooks, which DeepSpeed keeps out of compiled code, would split each compiled
    layer into pieces.

    Not with LoRA: DeepSpeed reduces a leaf's gradients in a full backward hook, which fires before the
    layer's own backward when none of its inputs requires a gradient, as behind LoRA's frozen embedding.
    """
    from deepspeed.utils import set_z3_leaf_modules

    layer_classes = list(dict.fromkeys(type(layer) for layer in decoder_layers(scorer)))
    if layer_classes:
        set_z3_leaf_modules(scorer, layer_classes)


def check_deepspeed_version() -> None:
    """rlkit drives gradient accumulation through `managed_gradient_accumulation: false`, which DeepSpeed
    supports for every ZeRO stage only in recent releases (0.19.8 is the one tested)."""
    import deepspeed
    from deepspeed.runtime.engine import DeepSpeedEngine as _Engine
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    if not (hasattr(_Engine, "managed_gradient_accumulation")
            and hasattr(DeepSpeedZeroOptimizer_Stage3, "finalize_gradient_accumulation_boundary")):
        raise PluginError(
            f"deepspeed {deepspeed.__version__} cannot leave gradient accumulation to rlkit "
            "(managed_gradient_accumulation for ZeRO-1/2/3); install deepspeed>=0.19.8"
        )


def ensure_process_group(dist: DistInfo) -> None:
    """DeepSpeed needs a process group (rlkit.distributed.ensure_process_group starts a 1-rank one at world
    size 1 without torchrun, as for FSDP2) and insists on the LOCAL_RANK variable that torchrun and its own
    launcher set."""
    os.environ.setdefault("LOCAL_RANK", str(dist.local_rank))
    distributed.ensure_process_group(dist)
