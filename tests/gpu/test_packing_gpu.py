"""Sequence packing on CUDA in bf16: torch's flash varlen kernel, not the CPU fallback, and the same log-probs
as the padded forward up to bf16 rounding (the CPU suite, tests/unit/engines/test_packing.py, covers the
fallback and the layout).

Errors are measured against fp32 log-probs of the padded model, so "within bf16 noise" means: the packed bf16
log-probs are about as far from them as the padded bf16 ones (measured on CPU for this model: bf16 rounding
moves log-probs by ~0.002 on average, 0.008 at most; letting sequences see each other moves them by ~0.2).
3 passed on an H200 (torch 2.11, transformers 5.17) on 2026-11-21. Run it with:
    python -m pytest tests/gpu/test_packing_gpu.py -m gpu -q
"""

import copy

import pytest
import torch

from rlkit.batch import Batch
from rlkit.config.schema import EngineConfig, OptimConfig
from rlkit.engines import varlen_attention
from rlkit.distributed import DistInfo
from rlkit.engines.base import EngineSpec, ModelOutput
from rlkit.engines.packing import pack
from rlkit.engines.sequences import PolicyScorer
from rlkit.engines.varlen_attention import use_varlen_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

VOCAB, PROMPT_WIDTH, RESPONSE_WIDTH = 512, 32, 64
PROMPT_LENGTHS = [32, 5, 17, 1, 9, 30, 12, 3]
RESPONSE_LENGTHS = [64, 7, 40, 12, 1, 55, 20, 33]
NUM_LAYERS = 2


def random_qwen2(head_dim: int):
    """A 2-layer Qwen2 with 4 query and 2 key/value heads of `head_dim`, random weights, fp32 on CPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=VOCAB, hidden_size=4 * head_dim, intermediate_size=8 * head_dim,
                         num_hidden_layers=NUM_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen2ForCausalLM(config).eval()


def uneven_batch() -> Batch:
    """Prompts left-padded to 32 and responses right-padded to 64, of very different lengths."""
    generator = torch.Generator().manual_seed(0)
    P, T = PROMPT_WIDTH, RESPONSE_WIDTH
    input_ids = torch.randint(4, VOCAB, (len(PROMPT_LENGTHS), P + T), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, (prompt, response) in enumerate(zip(PROMPT_LENGTHS, RESPONSE_LENGTHS)):
        attention_mask[row, : P - prompt] = 0
        attention_mask[row, P + response :] = 0
    input_ids[attention_mask == 0] = 0
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0),
                  "response_mask": attention_mask[:, P:].float(),
                  "advantages": torch.randn(len(PROMPT_LENGTHS), T, generator=generator)})


@pytest.fixture
def kernel_calls(monkeypatch) -> dict[str, int]:
    """How often the packed attention ran torch's flash varlen kernel and the per-sequence fallback."""
    calls = {"flash": 0, "fallback": 0}

    def counted(kind, function):
        def wrapper(*args, **kwargs):
            calls[kind] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(varlen_attention, "flash_varlen", counted("flash", varlen_attention.flash_varlen))
    monkeypatch.setattr(varlen_attention, "per_sequence_sdpa",
                        counted("fallback", varlen_attention.per_sequence_sdpa))
    return calls


def padded_logprobs(model, batch: Batch) -> torch.Tensor:
    inputs = {key: batch[key].cuda() for key in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logprobs, _ = PolicyScorer(model, chunk_size=1024, temperature=1.0)(
            **inputs, response_width=RESPONSE_WIDTH, with_entropy=False)
    return logprobs.cpu()


def packed_logprobs(model, batch: Batch, cu_seq_lens: torch.Tensor | None = None) -> torch.Tensor:
    packed = pack(batch)
    inputs = packed.scorer_inputs(torch.device("cuda"))
    if cu_seq_lens is not None:
        inputs["cu_seq_lens"] = cu_seq_lens.cuda()
    with torch.no_grad():
        logprobs, _ = PolicyScorer(model, chunk_size=1024, temperature=1.0)(**inputs, with_entropy=False)
    return packed.to_batch(logprobs.cpu())


@pytest.mark.parametrize("head_dim", [64, 16])  # 16: the builtin tiny model's
def test_packed_bf16_logprobs_use_flash_and_match_padded(head_dim, kernel_calls):
    model = random_qwen2(head_dim)
    batch = uneven_batch()
    mask = batch["response_mask"].bool()
    truth = padded_logprobs(copy.deepcopy(model).cuda(), batch)  # fp32, masked SDPA
    padded_bf16 = padded_logprobs(copy.deepcopy(model).cuda().bfloat16(), batch)
    packed_model = copy.deepcopy(model).cuda().bfloat16()
    use_varlen_attention(packed_model)
    packed_bf16 = packed_logprobs(packed_model, batch)
    assert kernel_calls == {"flash": NUM_LAYERS, "fallback": 0}

    padded_error, packed_error = ((x[mask] - truth[mask]).abs() for x in (padded_bf16, packed_bf16))
    assert packed_error.max() < 0.05, (packed_error.max(), padded_error.max())
    assert packed_error.mean() < 2 * padded_error.mean() + 1e-3, (packed_error.mean(), padded_error.mean())

    # the check can fail: one boundary around the whole row (sequences see each other) is far off
    leaky_model = copy.deepcopy(model).cuda()  # fp32: the fallback computes it
    use_varlen_attention(leaky_model)
    leaky = packed_logprobs(leaky_model, batch, cu_seq_lens=torch.tensor([0, int(pack(batch).cu_seq_lens[-1])]))
    assert (leaky[mask] - truth[mask]).abs().mean() > 10 * packed_error.mean()


def test_fsdp2_bf16_step_packed_matches_padded(tmp_path, kernel_calls):
    """One FSDP2 training step in bf16 with and without packing: log-probs, entropy, loss and grad norm; the
    flash kernel runs forward and backward."""
    from rlkit.engines.fsdp2 import FSDP2Engine
    from rlkit.engines.fsdp2.options import FSDP2Options

    random_qwen2(head_dim=64).save_pretrained(tmp_path / "model")
    batch = uneven_batch()
    num_tokens = batch["response_mask"].sum().item()

    def loss_fn(output: ModelOutput, micro: Batch):
        per_token = -micro["advantages"] * output.logprobs - 0.01 * output.entropy
        loss = (per_token * micro["response_mask"]).sum() / num_tokens
        return loss, {"loss": loss.item()}

    measured = {}
    for packing in (False, True):
        spec = EngineSpec(role="actor", model_path=str(tmp_path / "model"), optim=OptimConfig(lr=1e-5),
                          total_optimizer_steps=1)
        engine = FSDP2Engine(EngineConfig(pack_sequences=packing, max_tokens_per_micro_batch=256), FSDP2Options(),
                             spec, DistInfo(device="cuda:0"))
        output = engine.compute_logprobs(batch, micro_batch_size=4, with_entropy=True)
        metrics = engine.forward_backward(batch, loss_fn, micro_batch_size=4)
        measured[packing] = {"logprobs": output.logprobs, "entropy": output.entropy, **metrics,
                             **engine.optimizer_step()}
    assert kernel_calls["flash"] > 0 and kernel_calls["fallback"] == 0

    mask = batch["response_mask"].bool()
    padded, packed = measured[False], measured[True]
    for key in ("logprobs", "entropy"):
        assert (packed[key][mask] - padded[key][mask]).abs().max() < 0.05, key
    assert packed["loss"] == pytest.approx(padded["loss"], rel=1e-2, abs=1e-3)
    assert packed["grad_norm"] == pytest.approx(padded["grad_norm"], rel=5e-2)


def fsdp2_packed_steps(model_dir, batch: Batch, configs: dict) -> dict:
    """One bf16 FSDP2 step of a packed engine per EngineConfig of `configs` ({name: config}), with dynamo's
    counters from zero: log-probs, loss and grad norm by name."""
    from torch._dynamo.utils import counters

    from rlkit.engines.fsdp2 import FSDP2Engine
    from rlkit.engines.fsdp2.options import FSDP2Options

    num_tokens = batch["response_mask"].sum().item()

    def loss_fn(output: ModelOutput, micro: Batch):
        loss = (-micro["advantages"] * output.logprobs * micro["response_mask"]).sum() / num_tokens
        return loss, {"loss": loss.item()}

    measured = {}
    torch._dynamo.reset()
    counters.clear()
    for name, config in configs.items():
        spec = EngineSpec(role="actor", model_path=str(model_dir), optim=OptimConfig(lr=1e-5), total_optimizer_steps=1)
        engine = FSDP2Engine(config, FSDP2Options(), spec, DistInfo(device="cuda:0"))
        output = engine.compute_logprobs(batch, micro_batch_size=4)
        metrics = engine.forward_backward(batch, loss_fn, micro_batch_size=4)
        measured[name] = {"logprobs": output.logprobs, **metrics, **engine.optimizer_step()}
    return measured


def assert_same_step(measured: dict, reference: dict, mask: torch.Tensor) -> None:
    """Within bf16 rounding: log-probs at the response tokens, loss and grad norm."""
    assert (measured["logprobs"][mask] - reference["logprobs"][mask]).abs().max() < 0.05
    assert measured["loss"] == pytest.approx(reference["loss"], rel=1e-2, abs=1e-3)
    assert measured["grad_norm"] == pytest.approx(reference["grad_norm"], rel=5e-2)


def test_fsdp2_compiled_packed_step_traces_the_kernel_and_matches_eager(tmp_path):
    """engine.torch_compile with packing: the flash kernel runs inside each compiled decoder layer (no graph
    break), and a step gives what the eager packed step gives (log-probs, loss, grad norm) up to bf16 rounding.
    Passed on an H200 on 2026-12-03."""
    from torch._dynamo.utils import counters

    random_qwen2(head_dim=64).save_pretrained(tmp_path / "model")
    batch = uneven_batch()
    measured = fsdp2_packed_steps(tmp_path / "model", batch, {
        compiled: EngineConfig(pack_sequences=True, torch_compile=compiled, max_tokens_per_micro_batch=256)
        for compiled in (False, True)})
    assert dict(counters["graph_break"]) == {}
    assert_same_step(measured[True], measured[False], batch["response_mask"].bool())
    torch._dynamo.reset()


def test_the_flash_kernel_aligns_longer_keys_at_the_end():
    """What engine.share_prompts' auto checks at the start of a run (rlkit.trainer.speed.MachineFacts.here)."""
    varlen_attention._resolved.pop("keys_at_end", None)
    assert varlen_attention.flash_aligns_keys_at_end("cuda:0")


def grouped_batch() -> Batch:
    """uneven_batch with rows 0-2, 3-4 and 6-7 on their first row's prompt (a GRPO group's samples)."""
    batch = uneven_batch()
    for group in ([0, 1, 2], [3, 4], [6, 7]):
        for row in group[1:]:
            for key in ("input_ids", "attention_mask"):
                batch[key][row, :PROMPT_WIDTH] = batch[key][group[0], :PROMPT_WIDTH]
    batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
    return batch


@pytest.mark.parametrize("compiled", [False, True])
def test_fsdp2_shared_prompts_step_matches_whole_rows(tmp_path, kernel_calls, compiled):
    """engine.share_prompts: the flash kernel with key sequences longer than their queries (a response after
    its shared prompt) gives the step that packing every row whole gives, eager and compiled (no graph break)."""
    from torch._dynamo.utils import counters

    random_qwen2(head_dim=64).save_pretrained(tmp_path / "model")
    batch = grouped_batch()
    measured = fsdp2_packed_steps(tmp_path / "model", batch, {
        shared: EngineConfig(pack_sequences=True, share_prompts=shared, torch_compile=compiled,
                             max_tokens_per_micro_batch=256)
        for shared in (False, True)})
    assert kernel_calls["fallback"] == 0 and (compiled or kernel_calls["flash"] > 0)
    assert dict(counters["graph_break"]) == {}
    assert_same_step(measured[True], measured[False], batch["response_mask"].bool())
    torch._dynamo.reset()


@pytest.mark.parametrize("share_prompts", [False, True])
def test_the_passes_wait_for_the_gpu_no_more_with_more_micro_batches(tmp_path, share_prompts):
    """Inside a pass's micro-batch loop the host never waits for the GPU (rlkit.batch.to_device: a plain copy of a
    CPU tensor to a GPU synchronizes the stream), so the synchronizing calls torch reports are as many with four
    micro-batches as with one: the update's metrics read once at the end, the log-probs copied back once."""
    import warnings

    from rlkit.engines.fsdp2 import FSDP2Engine
    from rlkit.engines.fsdp2.options import FSDP2Options

    random_qwen2(head_dim=64).save_pretrained(tmp_path / "model")
    batch = grouped_batch()
    num_tokens = float(batch["response_mask"].sum())

    def loss_fn(output: ModelOutput, micro: Batch):
        loss = (-micro["advantages"] * output.logprobs * micro["response_mask"]).sum() / num_tokens
        return loss, {"loss": loss.detach()}

    spec = EngineSpec(role="actor", model_path=str(tmp_path / "model"), optim=OptimConfig(lr=1e-5),
                      total_optimizer_steps=1)
    engine = FSDP2Engine(EngineConfig(pack_sequences=True, share_prompts=share_prompts), FSDP2Options(), spec,
                         DistInfo(device="cuda:0"))
    passes = {"update": lambda size: engine.forward_backward(batch, loss_fn, micro_batch_size=size),
              "logprobs": lambda size: engine.compute_logprobs(batch, micro_batch_size=size, with_entropy=True)}
    syncs = {}
    for name, run in passes.items():
        for micro_batch_size in (8, 2, 8, 2):  # the first calls warm up; the later ones count
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    run(micro_batch_size)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs[name, micro_batch_size] = sum("synchroniz" in str(warning.message) for warning in caught)
    for name in passes:
        assert syncs[name, 2] == syncs[name, 8], syncs

