"""The activation estimate behind `engine.max_tokens_per_micro_batch: auto` (rlkit.engines.memory) against what a
packed training forward and backward of SmolLM2-135M's shape (random weights, bf16, flash varlen kernel) really
allocates on the GPU, eager and with compiled layers (inductor on CUDA; the CPU suite checks inductor's choice on
CPU, tests/unit/engines/test_memory.py). Run it with:
    python -m pytest tests/gpu/test_memory_gpu.py -m gpu -q -s
(-s prints the measured bytes a token against the estimate's.)
"""

import pytest
import torch

from rlkit.batch import Batch
from rlkit.engines.building import compile_decoder_layers
from rlkit.engines.memory import ModelFacts, activation_bytes_per_token, logits_bytes
from rlkit.engines.packing import pack
from rlkit.engines.sequences import PolicyScorer
from rlkit.engines.varlen_attention import use_varlen_attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPT, RESPONSE, ROWS, CHUNK = 128, 256, 48, 2048


def smollm2_shaped():
    """SmolLM2-135M's config (30 layers, h 576, 9 heads of 64, 3 KV heads, MLP 1536, vocabulary 49152), random
    weights, bf16, on the GPU, in train mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                                  intermediate_size=1536, num_hidden_layers=30, vocab_size=49152,
                                  tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16).cuda().train()
    return model, ModelFacts.of_config(config, sum(p.numel() for p in model.parameters()),
                                       sum(p.numel() for p in model.parameters()), supports_attention_interface=True)


def full_batch(vocab_size: int) -> Batch:
    """48 rows of a 128-token prompt and a 256-token response, no padding: 18,432 tokens packed."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, vocab_size, (ROWS, PROMPT + RESPONSE), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": (attention_mask.cumsum(1) - 1), "response_mask": torch.ones(ROWS, RESPONSE)})


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_packed_step_takes_what_the_estimate_says(compiled):
    model, facts = smollm2_shaped()
    use_varlen_attention(model)
    if compiled:
        torch._dynamo.reset()
        compile_decoder_layers(model)
    scorer = PolicyScorer(model, chunk_size=CHUNK, temperature=1.0)
    packed = pack(full_batch(facts.vocab_size)).to(torch.device("cuda"))
    inputs = packed.scorer_inputs(torch.device("cuda"))
    tokens = inputs["input_ids"].numel()

    def step() -> None:
        logprobs, entropy = scorer(**inputs, with_entropy=True)
        (-(logprobs.sum() + 0.01 * entropy.sum()) / tokens).backward()

    step()  # compiles; its gradients stay, so the measured step allocates none
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    per_token = activation_bytes_per_token(facts, 2, checkpointing=False, packed=True, longest=0, compiled=compiled)
    estimate = per_token * tokens + logits_bytes(CHUNK, facts.vocab_size)
    print(f"\n{'compiled' if compiled else 'eager'}: {tokens} tokens, peak {peak / 2**30:.2f} GiB against the "
          f"estimate's {estimate / 2**30:.2f} ({peak / estimate:.2f}); activations and a chunk's logits")
    torch._dynamo.reset()
    assert peak <= estimate  # the budget's arithmetic holds on the GPU (before its 1.2 headroom)
    assert peak >= 0.6 * estimate  # and is not a wild over-estimate
