"""What the vLLM GPU tests share: a tiny random Qwen2 with its own tokenizer, and the numbers they record.

Imported by tests/gpu/test_vllm.py and tests/gpu/test_vllm_torchrun.py (pytest puts this folder on the path).
"""

import json
import os
import random

import torch

NUMBERS: dict[str, float] = {}


def build_tiny(directory: str) -> dict[str, int]:
    """A random Qwen2 and a byte-level BPE tokenizer whose vocabulary is exactly the model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2ForCausalLM

    rng = random.Random(0)
    words = "the a cat dog runs over red blue fast model token reward policy value one two three plus is".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(1000)]
    characters = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?+-="
    texts += ["".join(rng.choice(characters) for _ in range(60)) for _ in range(500)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|pad|>")
    hf_tokenizer.save_pretrained(directory)
    ids = {name: tokenizer.token_to_id(token) for name, token in
           [("eos", "<|im_end|>"), ("endoftext", "<|endoftext|>"), ("pad", "<|pad|>")]}
    ids["vocab"] = tokenizer.get_vocab_size()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config(ids)).to(torch.bfloat16)
    # two EOS ids, as in Qwen checkpoints: the tokenizer's and one more from generation_config.json
    model.generation_config = GenerationConfig(eos_token_id=[ids["eos"], ids["endoftext"]], pad_token_id=ids["pad"])
    model.save_pretrained(directory, safe_serialization=True)
    return ids


def qwen2_config(ids):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=ids["vocab"], hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=False,
        eos_token_id=ids["eos"], pad_token_id=ids["pad"], bos_token_id=None, torch_dtype="bfloat16",
    )


def random_model(ids, seed):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(qwen2_config(ids)).to(device="cuda", dtype=torch.bfloat16).eval()


def record(name, value):
    NUMBERS[name] = value
    print(f"[vllm-gpu] {name} = {value}")


def write_numbers() -> None:
    """Add what was measured to $RLKIT_GPU_NUMBERS (JSON), keeping what other modules wrote there."""
    path = os.environ.get("RLKIT_GPU_NUMBERS")
    if not path or not NUMBERS:
        return
    written = json.load(open(path)) if os.path.exists(path) else {}
    with open(path, "w") as file:
        json.dump({**written, **NUMBERS}, file, indent=1, sort_keys=True)
