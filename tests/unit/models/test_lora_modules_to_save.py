"""model.lora.modules_to_save: modules trained in full beside the adapters (the tiny model's LM head by default)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlkit.config import LoraConfig, ModelConfig
from rlkit.errors import ConfigError
from rlkit.models.lora import apply_lora, hf_model_of, hf_weights

INPUT_IDS = torch.tensor([[5, 17, 42, 8, 99, 23, 64, 3]])


def test_the_builtin_tiny_model_trains_its_head_by_default():
    assert ModelConfig(lora={}).lora.modules_to_save == ["lm_head"]  # model.path defaults to builtin:tiny
    assert ModelConfig(path="some/model", lora={}).lora.modules_to_save == []
    assert ModelConfig(path="some/model", lora={"modules_to_save": ["lm_head"]}).lora.modules_to_save == ["lm_head"]
    assert ModelConfig(lora={"modules_to_save": []}).lora.modules_to_save == []
    assert ModelConfig().lora is None


def test_the_head_trains_while_the_reference_keeps_the_original(tiny_model):
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        base_logits = base(INPUT_IDS).logits
    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(modules_to_save=["lm_head"]))
    trainable = [name for name, param in model.named_parameters() if param.requires_grad and ".lora_" not in name]
    assert trainable == ["base_model.model.lm_head.modules_to_save.default.weight"]
    head = hf_model_of(model).lm_head.modules_to_save["default"].weight
    with torch.no_grad():
        head.mul_(3.0)  # stands in for training
        trained_logits = model(INPUT_IDS).logits
        with model.disable_adapter():  # the LoRA reference pass
            reference_logits = model(INPUT_IDS).logits
    assert not torch.allclose(trained_logits, base_logits)
    torch.testing.assert_close(reference_logits, base_logits)

    # Streamed to rollout engines and exports under the plain name, the trained copy only.
    weights = dict(hf_weights(model, lambda tensor: tensor.detach()))
    assert set(weights) == set(base.state_dict())
    torch.testing.assert_close(weights["lm_head.weight"], base.lm_head.weight * 3.0)


def tied_model() -> Qwen2ForCausalLM:
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))


def test_a_tied_head_or_an_unknown_module_is_refused():
    with pytest.raises(ConfigError, match="'lm_head' is tied to the input embeddings"):
        apply_lora(tied_model(), LoraConfig(modules_to_save=["lm_head"]))
    with pytest.raises(ConfigError, match="names 'value_head', which this model does not have"):
        apply_lora(tied_model(), LoraConfig(modules_to_save=["value_head"]))
