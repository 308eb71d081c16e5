"""Applying FSDP2 to a scorer (rlkit.engines.sequences): a short ordered list of steps, torchtitan style.

`build_mesh` runs first (fully_shard needs the mesh), then `parallelize`: activation checkpointing, then
torch.compile of the decoder layers, then `fully_shard` on every decoder layer (engine.fsdp2.units=layers), then
on the root, which takes what no layer claimed (with units=model, the whole model as one unit).

At world size 1 without torchrun there is no process group; `build_mesh` then starts a 1-rank group over
an in-memory store (`rlkit.distributed.ensure_process_group`), so one code path (fully_shard, mixed
precision, DTensor state dicts) serves every world size.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from rlkit.config.engines import EngineConfig
from rlkit.distributed import DistInfo, ensure_process_group
from rlkit.engines.building import apply_activation_checkpointing, compile_decoder_layers, decoder_layers
from rlkit.engines.fsdp2.options import FSDP2Options
from rlkit.models.lora import hf_model_of

logger = logging.getLogger(__name__)


def build_mesh(dist_info: DistInfo) -> DeviceMesh:
    """A 1-D mesh over all ranks on this process's device type."""
    ensure_process_group(dist_info)
    return init_device_mesh(torch.device(dist_info.device).type, (dist_info.world_size,))


def parallelize(
    scorer: nn.Module, mesh: DeviceMesh, config: EngineConfig, options: FSDP2Options, *, param_dtype: torch.dtype,
    device: str, trainable: bool,
) -> None:
    """Shard `scorer` in place over `mesh`."""
    if config.gradient_checkpointing and trainable:
        # on the unwrapped transformers model: flags its decoder layers read in train mode
        apply_activation_checkpointing(hf_model_of(scorer.model))
    if config.torch_compile:  # before fully_shard: FSDP's hooks stay outside the compiled forwards
        compile_decoder_layers(scorer)
    # the layers before the root: the root then takes only the parameters no layer claimed
    apply_fully_shard(scorer, mesh, options, param_dtype=param_dtype, device=device)


def apply_fully_shard(
    scorer: nn.Module, mesh: DeviceMesh, options: FSDP2Options, *, param_dtype: torch.dtype, device: str
) -> None:
    """Shard every decoder layer as its own unit, then the root (embeddings, final norm, heads); with
    `options.units == "model"` only the root, the whole model as one unit.

    Master weights keep their dtype; with a bf16 `param_dtype` FSDP casts them when it gathers them and
    reduces gradients in fp32.
    """
    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    offload_policy = CPUOffloadPolicy(pin_memory=device.startswith("cuda")) if options.cpu_offload else OffloadPolicy()
    per_layer = options.units == "layers"  # the engine resolved `auto` (rlkit.engines.fsdp2.options)
    layers = decoder_layers(scorer) if per_layer else []
    if per_layer and not layers:
        logger.warning("no decoder layers found (model._no_split_modules is empty): the model is one FSDP unit")
    for layer in layers:
        fully_shard(
            layer,
            mesh=mesh,
            reshard_after_forward=options.reshard_after_forward,
            mp_policy=mp_policy,
            offload_policy=offload_policy,
        )
    # the root last: it takes the parameters no layer claimed; FSDP keeps them gathered between forward and backward
    fully_shard(scorer, mesh=mesh, mp_policy=mp_policy, offload_policy=offload_policy)

