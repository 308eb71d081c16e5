"""The rollout engines' shared weight-update logic on CPU: the expected shapes, name/shape checks, buckets."""

from __future__ import annotations

import pytest
import torch

from rlkit.rollout.behaviour import build_tiny_checkpoint
from rlkit.buckets import bucket_weights
from rlkit.rollout.weights import check_weight, weight_shapes


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_checkpoint(path)
    return str(path)


# -- shapes and checks -------------------------------------------------------------------------
def test_weight_shapes_match_the_hf_model(model_path):
    from transformers import AutoModelForCausalLM

    shapes = weight_shapes(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    assert shapes == {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (64, 64)  # hidden 64


def test_check_weight_names_the_bad_weight(model_path):
    shapes = weight_shapes(model_path)
    check_weight("lm_head.weight", torch.empty(shapes["lm_head.weight"]), shapes, model_path)
    with pytest.raises(ValueError, match=r"unknown weight 'model.layers.0.self_attn.q_proj.weigth'.*did you mean "
                                         r"'model.layers.0.self_attn.q_proj.weight'\?\)\. Weights must use"):
        check_weight("model.layers.0.self_attn.q_proj.weigth", torch.empty(64, 64), shapes, model_path)
    with pytest.raises(ValueError, match=r"unknown weight 'zzz': .* has no such parameter\. Weights must use"):
        check_weight("zzz", torch.empty(1), shapes, model_path)  # nothing close: no hint
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \(3, 64\).*has shape \(\d+, 64\)"):
        check_weight("lm_head.weight", torch.empty(3, 64), shapes, model_path)


# -- buckets -----------------------------------------------------------------------------------
def test_bucket_weights_respects_the_byte_limit():
    weights = [
        ("a", torch.zeros(4, dtype=torch.float32)),  # 16 bytes
        ("b", torch.zeros(8, dtype=torch.bfloat16)),  # 16 bytes -> a+b = 32
        ("c", torch.zeros(2, dtype=torch.float32)),  # 8 bytes -> 40 > 32: new bucket
        ("d", torch.zeros(20, dtype=torch.float32)),  # 80 bytes > 32: alone
        ("e", torch.zeros(1, dtype=torch.int64)),  # 8 bytes
    ]
    buckets = list(bucket_weights(iter(weights), max_bytes=32))
    assert [[name for name, _ in bucket] for bucket in buckets] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert all(tensor is dict(weights)[name] for bucket in buckets for name, tensor in bucket)


def test_bucket_weights_is_lazy():
    pulled = []

    def stream():
        for i in range(6):
            pulled.append(i)
            yield f"w{i}", torch.zeros(2, dtype=torch.float32)  # 8 bytes each

    buckets = bucket_weights(stream(), max_bytes=16)
    assert [name for name, _ in next(buckets)] == ["w0", "w1"]
    assert pulled == [0, 1, 2]  # w2 opened the next bucket; w3.. not pulled yet
    assert [len(bucket) for bucket in buckets] == [2, 2]
    assert list(bucket_weights([], max_bytes=16)) == []
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        list(bucket_weights([("a", torch.zeros(1))], max_bytes=0))
