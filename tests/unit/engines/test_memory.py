"""rlkit.engines.memory: the activation estimate against what autograd really saves, by hand on a real model's
shape, and the model facts (parameter counts, LoRA, whether packing can serve the model)."""

import pytest
import torch
from engine_cases import make_batch
from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

from rlkit.config.schema import LoraConfig
from rlkit.engines.building import apply_activation_checkpointing
from rlkit.engines.memory import (
    ModelFacts,
    activation_bytes_per_token,
    layer_bytes_per_token,
    logits_bytes,
    outside_bytes_per_token,
    pending_state_bytes,
)
from rlkit.engines.micro_batches import SHARED_KEY_WEIGHT
from rlkit.engines.packing import pack
from rlkit.engines.sequences import PolicyScorer
from rlkit.engines.varlen_attention import use_varlen_attention
from rlkit.models.lora import apply_lora


def tiny_variant(model_dir: str, num_layers: int, dtype: torch.dtype) -> torch.nn.Module:
    """The tiny model's architecture with `num_layers` layers, random weights, in `dtype`, in train mode."""
    config = AutoConfig.from_pretrained(model_dir)
    config.num_hidden_layers = num_layers
    config.layer_types = ["full_attention"] * num_layers
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(dtype).train()


def saved_bytes_per_token(model: torch.nn.Module, *, packed: bool, checkpointing: bool = False) -> float:
    """What autograd keeps for backward, per token the model runs on, in one training forward of the scorer
    (logits chunked as the engines do). Counted by storage, so views are counted once; weights are left out."""
    if checkpointing:
        apply_activation_checkpointing(model)  # as the engines do
    batch = make_batch(model.config.vocab_size, num_seqs=8)
    if packed:
        use_varlen_attention(model)
        inputs = pack(batch).scorer_inputs(torch.device("cpu"))
        num_tokens = inputs["input_ids"].numel()
    else:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
        inputs["response_width"] = batch.response_width
        num_tokens = batch["input_ids"].numel()
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    scorer = PolicyScorer(model, chunk_size=2048, temperature=1.0)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        scorer(**inputs, with_entropy=True)
    return sum(saved.values()) / num_tokens


@pytest.fixture(scope="module")
def facts(tiny_model_dir) -> ModelFacts:
    return ModelFacts.of(tiny_model_dir)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_the_estimate_bounds_what_autograd_saves(tiny_model_dir, facts, dtype, packed):
    b = dtype.itemsize
    longest = make_batch(facts.vocab_size).prompt_width + make_batch(facts.vocab_size).response_width
    two, three = (saved_bytes_per_token(tiny_variant(tiny_model_dir, layers, dtype), packed=packed)
                  for layers in (2, 3))
    layer = layer_bytes_per_token(facts, b, packed=packed, longest=longest)
    outside = outside_bytes_per_token(facts, b)
    assert three - two <= layer  # one more layer keeps at most what the estimate says a layer keeps
    assert two <= 2 * layer + outside  # and the whole model at most its layers and what sits outside them
    estimate = activation_bytes_per_token(facts, b, checkpointing=False, packed=packed, longest=longest)
    assert two < estimate < 2 * two  # the budget's number (with backward's gradients): a bound, not a wild one


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_compiled_layers_keep_what_the_compiled_estimate_says(tiny_model_dir, facts, packed):
    """`auto` compiles on a GPU and sizes the budget with the compiled estimate: inductor's layers keep at most
    what it says a compiled layer keeps, and not much less (on one H200 the compiled passes took ~0.55 MB a token
    on SmolLM2-135M, which the compiled estimate gives: docs/benchmarks.md, eighth session)."""
    from rlkit.engines.building import compile_decoder_layers

    longest = make_batch(facts.vocab_size).prompt_width + make_batch(facts.vocab_size).response_width
    saved = {}
    for compiled in (False, True):
        per_model = []
        for layers in (2, 3):
            model = tiny_variant(tiny_model_dir, layers, torch.bfloat16)
            if compiled:
                torch._dynamo.reset()
                compile_decoder_layers(model)
            per_model.append(saved_bytes_per_token(model, packed=packed))
        saved[compiled] = per_model[1] - per_model[0]
    torch._dynamo.reset()
    layer = layer_bytes_per_token(facts, 2, packed=packed, longest=longest, compiled=True)
    assert 0.85 * layer <= saved[True] <= layer
    assert saved[True] < 0.8 * saved[False]  # and less than eager layers keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_with_checkpointing_a_layer_keeps_only_its_input(tiny_model_dir, facts, dtype):
    b, h = dtype.itemsize, facts.hidden_size
    two, three = (saved_bytes_per_token(tiny_variant(tiny_model_dir, layers, dtype), packed=True, checkpointing=True)
                  for layers in (2, 3))
    assert three - two <= b * h
    assert two <= 2 * b * h + outside_bytes_per_token(facts, b)
    # The recomputed layer, with its gradients, is what the hooks cannot see (it happens in backward).
    layer = layer_bytes_per_token(facts, b, packed=True, longest=0)
    assert activation_bytes_per_token(facts, b, checkpointing=True, packed=True, longest=0) == \
        2 * b * h + 2 * layer + outside_bytes_per_token(facts, b)


def test_the_estimate_by_hand_for_smollm2_135m():
    # SmolLM2-135M: h 576, 9 heads of 64 (h_q 576), 3 KV heads, MLP 1536, 30 layers, vocabulary 49152.
    config = AutoConfig.for_model("llama", hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                                  intermediate_size=1536, num_hidden_layers=30, vocab_size=49152)
    facts = ModelFacts.of_config(config, 134_515_008, 134_515_008, supports_attention_interface=True)
    assert facts.head_dim == 64 and facts.packing_blocker is None
    # bf16, packed. A layer: norms 2 x (4 + 4) x 576 = 9,216; attention 4 x 2 x 576 + 4 x 9 = 4,644;
    # MLP 4 x 2 x 1536 = 12,288; reciprocal RMS 8: 26,156 bytes.
    assert layer_bytes_per_token(facts, 2, packed=True, longest=1280) == 26_156
    # Padded to 1280 tokens, each layer keeps a mask row too: 2 x 1280 = 2,560 more.
    assert layer_bytes_per_token(facts, 2, packed=False, longest=1280) == 26_156 + 2_560
    # Outside: final norm 8 x 576 = 4,608, scored hidden 2 x 576 = 1,152, cos/sin 2 x 2 x 64 = 256, loss 64: 6,080.
    assert outside_bytes_per_token(facts, 2) == 6_080
    # 31 layers' worth (30 kept, one more for backward's gradients) + outside: 810,836 + 6,080 = 816,916 bytes.
    assert activation_bytes_per_token(facts, 2, checkpointing=False, packed=True, longest=1280) == 816_916
    # Checkpointed: 30 inputs of 2 x 576 = 34,560, one layer recomputed with its gradients 52,312, + 6,080.
    assert activation_bytes_per_token(facts, 2, checkpointing=True, packed=True, longest=1280) == 92_952
    # Compiled layers: norms 2 x 2 x 2 x 576 = 4,608; attention 4,644; MLP 3 x 2 x 1536 = 9,216; 8: 18,476 bytes,
    # and 31 x 18,476 + 6,080 = 578,836 bytes a token (0.55 MiB).
    assert layer_bytes_per_token(facts, 2, packed=True, longest=1280, compiled=True) == 18_476
    assert activation_bytes_per_token(facts, 2, checkpointing=False, packed=True, longest=1280,
                                      compiled=True) == 578_836
    # One 2048-token chunk of 49152 logits at 26 bytes: 2,617,245,696 bytes.
    assert logits_bytes(2048, 49152) == 2_617_245_696
    # Still to come on one rank: 12 x 134,515,008 + 2 x 134,515,008 = 1,883,210,112 bytes; half on two.
    assert pending_state_bytes([facts], 1) == 1_883_210_112
    assert pending_state_bytes([facts], 2) == 941_605_056


def test_model_facts_count_parameters_and_lora_adapters(tiny_model_dir, plain_model):
    facts = ModelFacts.of(tiny_model_dir)
    assert facts.num_parameters == sum(p.numel() for p in plain_model.parameters())  # tied embeddings once
    assert facts.trainable_parameters == facts.num_parameters
    assert (facts.hidden_size, facts.num_layers, facts.num_heads, facts.num_kv_heads) == (64, 2, 4, 2)
    for lora in (LoraConfig(rank=4, target_modules="all-linear"), LoraConfig(rank=2, target_modules=["q_proj"])):
        counted = ModelFacts.of(tiny_model_dir, lora=lora).trainable_parameters
        adapted = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora, task_type="CAUSAL_LM")
        assert counted == sum(p.numel() for p in adapted.parameters() if p.requires_grad)  # as peft places them


@pytest.mark.parametrize(
    "config, blocker",
    [
        (Qwen2Config(hidden_size=64, num_attention_heads=4), None),
        (AutoConfig.for_model("mistral", hidden_size=64, num_attention_heads=4, sliding_window=32), "sliding-window"),
        (AutoConfig.for_model("gemma2", hidden_size=64, num_attention_heads=4, head_dim=16,
                              attn_logit_softcapping=50.0, sliding_window=None, layer_types=["full_attention"] * 2,
                              num_hidden_layers=2), "soft-caps"),
        (Qwen2Config(hidden_size=60, num_attention_heads=5), "head size 12"),
    ],
    ids=["qwen2", "sliding-window", "softcap", "head-size"],
)
def test_what_keeps_packing_from_a_model(config, blocker):
    facts = ModelFacts.of_config(config, 1, 1, supports_attention_interface=True)
    assert (facts.packing_blocker is None) if blocker is None else (blocker in facts.packing_blocker)
    no_interface = ModelFacts.of_config(config, 1, 1, supports_attention_interface=False)
    assert "AttentionInterface" in no_interface.packing_blocker


@pytest.mark.parametrize("hidden, intermediate, heads, kv_heads, head_dim, layers", [
    (576, 1536, 9, 3, 64, 30),  # SmolLM2-135M
    (896, 4864, 14, 2, 64, 24),  # Qwen2.5-0.5B
    (4096, 11008, 32, 32, 128, 32),  # Llama-2-7B: no grouped-query heads
    (1024, 1024, 16, 16, 64, 4),  # the bound's shape: no grouped-query heads, an MLP no wider than the model
], ids=["smollm2-135m", "qwen2.5-0.5b", "llama2-7b", "mlp-width-h"])
@pytest.mark.parametrize("dtype_bytes", [2, 4])
def test_shared_key_weight_bounds_a_gathered_prompt_key(hidden, intermediate, heads, kv_heads, head_dim, layers,
                                                        dtype_bytes):
    """With shared prompts each response gathers its prompt's keys and values again, which the attention keeps for
    backward (every layer; with checkpointing the two layers held at once): the budget counts such a key as
    SHARED_KEY_WEIGHT of a token (rlkit.engines.micro_batches), which must not be less than what it keeps."""
    model = ModelFacts(num_parameters=0, trainable_parameters=0, hidden_size=hidden, num_layers=layers,
                       intermediate_size=intermediate, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                       vocab_size=32000)
    key_bytes = 2 * dtype_bytes * kv_heads * head_dim  # a key and a value, one layer
    for checkpointing, layers_kept in ((False, layers), (True, 2)):
        for compiled in (False, True):
            token = activation_bytes_per_token(model, dtype_bytes, checkpointing=checkpointing, packed=True,
                                               longest=0, compiled=compiled)
            assert layers_kept * key_bytes / token <= SHARED_KEY_WEIGHT
