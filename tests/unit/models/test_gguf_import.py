"""`rlkit model import FILE.gguf OUT`: a tiny llama written with the gguf package's GGUFWriter comes back as the same
model (weights, tokenizer ids, generation), and every bad input is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlkit.cli.main import cli
from rlkit.models.tiny import CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, train_tokenizer

gguf = pytest.importorskip("gguf", reason="the GGUF import needs `pip install 'rlkit[gguf]'`")
pytest.importorskip("accelerate", reason="the GGUF import needs `pip install 'rlkit[gguf]'`")

TEXTS = ["repeat the letter a 4 times", "what is 12 + 30? the answer is 42.", "Unseen WORDS, and ünïcode!",
         "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"]
# HF llama names -> llama.cpp's GGUF names (per layer: blk.N.<name>)
LAYER_TENSORS = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def interleave_rotary_halves(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows of each head with the two rotary halves interleaved; transformers undoes it."""
    rows = weight.shape[0]
    return weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tiny_llama_and_tokenizer():
    """A 2-layer llama (hidden 64, 4 heads, 2 KV heads) with bf16-exact weights, and rlkit's tiny byte-level BPE."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(0)
    eos_id, pad_id = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                         eos_token_id=eos_id, pad_token_id=pad_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # values bf16 holds exactly, so the bf16 import can equal them
            parameter.copy_(parameter.to(torch.bfloat16).float() + 0.0)
    return model, tokenizer


def write_gguf(path: Path, model, tokenizer, *, architecture: str = "llama") -> Path:
    """The model and tokenizer as llama.cpp's convert script lays them out, in float32."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")  # rlkit's tiny tokenizer splits text with Qwen2's pre-tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(pair) if isinstance(pair, list) else pair for pair in merges])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            weight = state[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if gguf_name == "attn_q" else config.num_key_value_heads
                weight = interleave_rotary_halves(weight, heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    model, tokenizer = tiny_llama_and_tokenizer()
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", model, tokenizer), model, tokenizer


@pytest.fixture(scope="module")
def imported(tiny_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "hf"
    result = CliRunner().invoke(cli, ["model", "import", str(tiny_gguf[0]), str(out)])
    assert result.exit_code == 0, result.output
    assert "LlamaForCausalLM (llama)" in result.output
    return out


def import_error(*args: str) -> str:
    """The message of a refused import (exit code 2, one line, no traceback)."""
    result = CliRunner().invoke(cli, ["model", "import", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output, result.output
    return result.output


def test_the_weights_come_back_equal_in_bf16(tiny_gguf, imported):
    from safetensors.torch import load_file

    _, source, _ = tiny_gguf
    saved = load_file(imported / "model.safetensors")
    expected = source.state_dict()
    assert set(saved) == set(expected)
    for name, tensor in saved.items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor.float(), expected[name]), name  # q/k un-interleaved, nothing rounded
    config = json.loads((imported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"
    assert "quantization_config" not in config and config["tie_word_embeddings"] is False
    generation = json.loads((imported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == source.config.eos_token_id


def test_the_model_computes_what_the_source_does(tiny_gguf, imported):
    from transformers import AutoModelForCausalLM

    _, source, _ = tiny_gguf
    loaded = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
    input_ids = torch.tensor([[5, 17, 42, 8, 99, 23, 64, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, source(input_ids).logits, rtol=1e-5, atol=1e-5)


def test_the_tokenizer_keeps_its_ids_and_chat_template(tiny_gguf, imported):
    from transformers import AutoTokenizer

    _, _, source = tiny_gguf
    tokenizer = AutoTokenizer.from_pretrained(imported)
    for text in TEXTS:
        assert tokenizer(text).input_ids == source.encode(text).ids, text
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    settings = json.loads((imported / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"  # read as saved by transformers 4.x and 5.x


def test_the_special_tokens_are_the_ones_the_gguf_declares(tiny_gguf, imported):
    # transformers 5.12 read the end token of a ChatML GGUF as <|im_start|>: the importer sets what the file says.
    from transformers import AutoTokenizer

    from rlkit.models.gguf import _declared_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(imported)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", "<|im_start|>"
    _declared_special_tokens(tiny_gguf[0], tokenizer)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN


def test_rlkit_generates_with_the_imported_folder(imported):
    result = CliRunner().invoke(cli, ["generate", str(imported), "--prompt", "repeat the letter a",
                                      "--max-new-tokens", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "--- sample 0" in result.output and "tokens" in result.output


def test_an_existing_folder_is_refused_and_kept(tiny_gguf, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "exists and is not empty" in import_error(str(tiny_gguf[0]), str(out))
    assert (out / "notes.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_a_file_that_is_not_gguf(tmp_path):
    text = tmp_path / "model.gguf"
    text.write_text("this is not a model\n")
    assert "is not a GGUF file" in import_error(str(text), str(tmp_path / "out"))
    assert "is not a file" in import_error(str(tmp_path), str(tmp_path / "out"))
    assert "does not exist" in import_error(str(tmp_path / "missing.gguf"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_truncated_file(tiny_gguf, tmp_path):
    whole = tiny_gguf[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    assert "is truncated or corrupt" in import_error(str(cut), str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf"]  # no half-written folder left


def test_an_architecture_transformers_cannot_read(tiny_gguf, tmp_path):
    model, tokenizer = tiny_llama_and_tokenizer()
    odd = write_gguf(tmp_path / "odd.gguf", model, tokenizer, architecture="rwkv6")
    message = import_error(str(odd), str(tmp_path / "out"))
    assert "holds a 'rwkv6' model, which transformers cannot read from GGUF" in message and "llama" in message


def test_without_the_gguf_package(tiny_gguf, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    assert "needs gguf: pip install 'rlkit[gguf]'" in import_error(str(tiny_gguf[0]), str(tmp_path / "out"))
