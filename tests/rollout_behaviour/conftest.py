"""The rollout engines under test and their fixtures, shared by the behaviour suite and the multi-turn tests:
`checkpoint` (a tiny model, built once a module) and `subject` (one engine of CASES with its fp32 Reference).

hf runs on CPU; hf on cuda, vllm and sglang are marked `gpu` and skip without a GPU or their package.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import AutoTokenizer

from rlkit.config.schema import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.registry import ROLLOUT_ENGINES
from rlkit.rollout.base import RolloutEngine
from rlkit.rollout.behaviour import Reference, build_tiny_checkpoint, tiny_prompts

needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


@dataclass(frozen=True)
class Case:
    config: RolloutConfig  # selects the engine by name; its own options come from its block
    device: str
    logprob_errors: tuple[float, float]  # largest and mean |engine - fp32 reference| (see Reference)
    requires: str | None = None  # the package the engine needs


FP32, BF16 = (1e-4, 1e-4), (0.5, 0.1)
CASES = [
    pytest.param(Case(RolloutConfig(name="hf"), "cpu", FP32), id="hf"),
    pytest.param(Case(RolloutConfig(name="hf"), "cuda:0", BF16), id="hf-cuda", marks=needs_gpu),
    pytest.param(
        Case(RolloutConfig.model_validate({"name": "vllm", "vllm": {"gpu_memory_utilization": 0.3,
                                                                    "enforce_eager": True}}),
             "cuda:0", BF16, "vllm"),
        id="vllm",
        marks=needs_gpu,
    ),
    pytest.param(
        Case(RolloutConfig.model_validate({"name": "sglang", "sglang": {"mem_fraction_static": 0.3,
                                                                        "disable_cuda_graph": True}}),
             "cuda:0", BF16, "sglang"),
        id="sglang",
        marks=needs_gpu,
    ),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    # head_dim 64: GPU attention kernels take it, while the model stays tiny
    build_tiny_checkpoint(path, hidden_size=128, num_heads=2, num_kv_heads=1)
    return str(path), AutoTokenizer.from_pretrained(path)  # reloaded, as the trainer and the engines load it


@pytest.fixture(scope="module", params=CASES)
def subject(request, checkpoint) -> tuple[RolloutEngine, Reference]:
    case: Case = request.param
    if case.requires:
        pytest.importorskip(case.requires)
    model_path, tokenizer = checkpoint
    engine_class = ROLLOUT_ENGINES.get(case.config.name)
    engine = engine_class(case.config, case.config.options, model_path, tokenizer, DistInfo(device=case.device), seed=1)
    reference = Reference(model_path, tokenizer, tiny_prompts(tokenizer), case.device, *case.logprob_errors)
    yield engine, reference
    if hasattr(engine, "close"):  # GPU engines shut down their workers and free the GPU
        engine.close()
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
