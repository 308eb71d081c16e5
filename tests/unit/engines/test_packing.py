"""Sequence packing (rlkit/engines/packing.py) and its attention (rlkit/engines/varlen_attention.py).

From the bottom up: the attention on random tensors against each sequence alone and against dense attention
under a block-diagonal causal mask (and not whole-row causal attention); how torch's varlen_attn is called
across its signatures; the packed layout of a hand-made batch; the token budget counting packed tokens; the
tiny model packed against padded, scorer by scorer. Then FSDP2 (with and without LoRA, with activation
checkpointing) and DeepSpeed ZeRO-3 with engine.pack_sequences must give what fixed padded micro-batches
give (log-probs, entropy, values at the response tokens; loss, grad norm and weights after one step) at world
size 1, and FSDP2 at world size 2. Last, `rlkit train` with packing, and the config rule against
remove_padding. The CUDA kernel path is tests/gpu/test_packing_gpu.py.
"""

import math

import pytest
import torch
from engine_cases import LORA
from micro_batching_cases import MICRO_BATCH, PACKED_SWITCHES, assert_same, make_uneven_batch, measure_world1

from rlkit.batch import Batch
from rlkit.config.schema import EngineConfig
from rlkit.engines import varlen_attention
from rlkit.engines.micro_batches import (
    MicroBatching,
    greedy_runs,
    longest_first,
    packed_size,
    plan,
    sequence_extents,
)
from rlkit.engines.packing import pack
from rlkit.engines.sequences import PolicyScorer, ValueScorer
from rlkit.engines.varlen_attention import (
    flash_varlen,
    per_sequence_sdpa,
    use_varlen_attention,
    varlen_causal_attention,
)
from rlkit.errors import ConfigError

CU_SEQ_LENS = torch.tensor([0, 3, 8, 9, 15], dtype=torch.int32)  # sequences of 3, 5, 1 and 6 tokens


# -- the attention -----------------------------------------------------------------------------------------
def random_qkv(num_tokens: int = 15, query_heads: int = 4, kv_heads: int = 2, head_dim: int = 8):
    """query (N, 4, 8), key and value (N, 2, 8): grouped-query attention, two query heads per key/value head."""
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(num_tokens, heads, head_dim, generator=generator)
            for heads in (query_heads, kv_heads, kv_heads))


def eager_attention(query_NHD, key_NHD, value_NHD, allowed_NN):
    """softmax(q k^T / sqrt(D) where allowed) v, written out, key/value heads repeated for their query heads."""
    groups = query_NHD.shape[1] // key_NHD.shape[1]
    key_NHD, value_NHD = (x.repeat_interleave(groups, dim=1) for x in (key_NHD, value_NHD))
    scores_HNN = torch.einsum("qhd,khd->hqk", query_NHD, key_NHD) / math.sqrt(query_NHD.shape[-1])
    weights_HNN = scores_HNN.masked_fill(~allowed_NN, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", weights_HNN, value_NHD)


def block_causal(cu_seq_lens) -> torch.Tensor:
    """(N, N) bool: token i may attend to token j of its own sequence at or before it."""
    lengths = (cu_seq_lens[1:] - cu_seq_lens[:-1]).long()
    sequence_N = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    num_tokens = len(sequence_N)
    return (sequence_N[:, None] == sequence_N[None, :]) & torch.ones(num_tokens, num_tokens).tril().bool()


def test_fallback_is_each_sequence_alone():
    query, key, value = random_qkv()
    output = varlen_causal_attention(query, key, value, CU_SEQ_LENS, 6)
    assert output.shape == (15, 4, 8)
    bounds = CU_SEQ_LENS.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:]):
        causal = torch.ones(stop - start, stop - start).tril().bool()
        expected = eager_attention(query[start:stop], key[start:stop], value[start:stop], causal)
        torch.testing.assert_close(output[start:stop], expected, rtol=0, atol=1e-6)


def test_fallback_is_dense_attention_under_a_block_diagonal_mask():
    query, key, value = random_qkv()
    output = varlen_causal_attention(query, key, value, CU_SEQ_LENS, 6)
    dense = eager_attention(query, key, value, block_causal(CU_SEQ_LENS))
    torch.testing.assert_close(output, dense, rtol=0, atol=1e-6)
    # and the boundaries matter: causal attention over the whole row is something else from the 2nd sequence on
    whole_row = eager_attention(query, key, value, torch.ones(15, 15).tril().bool())
    torch.testing.assert_close(output[:3], whole_row[:3], rtol=0, atol=1e-6)
    assert (output[3:] - whole_row[3:]).abs().max() > 0.1


@pytest.fixture
def fake_varlen_attn(monkeypatch):
    """Install a stand-in for torch's varlen_attn (`install(fake)`), read afresh for its signature."""

    def install(fake):
        monkeypatch.setattr(varlen_attention, "_torch_varlen_attn", lambda: fake)
        monkeypatch.setattr(varlen_attention, "_resolved", {})

    return install


def test_flash_varlen_on_torch_2_10_signature(fake_varlen_attn):
    """torch 2.10: is_causal, no enable_gqa: key/value heads are repeated for their query heads."""
    calls = []

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False, return_aux=None,
                    scale=None):
        calls.append({"is_causal": is_causal, "key_heads": key.shape[1], "cu_dtype": cu_seq_q.dtype, "max": max_q})
        assert is_causal
        return per_sequence_sdpa(query, key, value, cu_seq_q, scale=scale)

    fake_varlen_attn(varlen_attn)
    query, key, value = random_qkv()
    output = flash_varlen(query, key, value, CU_SEQ_LENS.long(), 6, scale=0.3)
    assert calls == [{"is_causal": True, "key_heads": 4, "cu_dtype": torch.int32, "max": 6}]
    torch.testing.assert_close(output, per_sequence_sdpa(query, key, value, CU_SEQ_LENS, scale=0.3))


def test_flash_varlen_on_torch_2_11_signature(fake_varlen_attn):
    """torch 2.11 on: window_size=(-1, 0) means causal, and enable_gqa takes the key/value heads as they are."""
    calls = []

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                    window_size=(-1, -1), enable_gqa=False):
        calls.append({"window_size": window_size, "enable_gqa": enable_gqa, "key_heads": key.shape[1]})
        assert window_size == (-1, 0)
        return per_sequence_sdpa(query, key, value, cu_seq_q, scale=scale)

    fake_varlen_attn(varlen_attn)
    query, key, value = random_qkv()
    output = flash_varlen(query, key, value, CU_SEQ_LENS, 6, scale=0.3)
    assert calls == [{"window_size": (-1, 0), "enable_gqa": True, "key_heads": 2}]
    torch.testing.assert_close(output, per_sequence_sdpa(query, key, value, CU_SEQ_LENS, scale=0.3))


def test_the_attention_function_takes_transformers_layout():
    query, key, value = random_qkv()
    as_transformers = [x.transpose(0, 1).unsqueeze(0) for x in (query, key, value)]  # (1, heads, N, D)
    output, weights = varlen_attention.varlen_attention_forward(
        None, *as_transformers, None, scaling=0.3, cu_seq_lens_q=CU_SEQ_LENS, max_length_q=6, position_ids=None
    )
    assert output.shape == (1, 15, 4, 8) and weights is None  # (1, N, query heads, D)
    torch.testing.assert_close(output[0], per_sequence_sdpa(query, key, value, CU_SEQ_LENS, scale=0.3))


@pytest.mark.parametrize("extra", [{"sliding_window": 4}, {"softcap": 50.0}, {"s_aux": torch.zeros(4)},
                                   {"dropout": 0.1}])
def test_the_attention_function_refuses_what_it_would_leave_out(extra):
    as_transformers = [x.transpose(0, 1).unsqueeze(0) for x in random_qkv()]
    with pytest.raises(ConfigError, match=f"uses {next(iter(extra))}"):
        varlen_attention.varlen_attention_forward(None, *as_transformers, None, cu_seq_lens_q=CU_SEQ_LENS, **extra)


@torch.library.custom_op("rlkit_tests::varlen_attn_stand_in", mutates_args=())
def varlen_attn_stand_in(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq_q: torch.Tensor,
                         max_q: int, scale: float | None) -> torch.Tensor:
    """An operator as torch's flash varlen kernel is one (torch_attn::_varlen_attn), computed on CPU."""
    return per_sequence_sdpa(query, key, value, cu_seq_q, scale=scale)


@varlen_attn_stand_in.register_fake
def _(query, key, value, cu_seq_q, max_q, scale):
    return torch.empty_like(query)


def test_compiled_decoder_layers_trace_the_flash_kernel_without_a_graph_break(tiny_model_dir, fake_varlen_attn,
                                                                             monkeypatch):
    """engine.torch_compile with packing: each decoder layer is one graph with the kernel in it (a graph break
    around the attention cost FSDP2's compiled update on one H200 about twice its GPU time in host work), and a
    new longest length compiles once more as a dynamic int, not once per length."""
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    from rlkit.engines.building import compile_decoder_layers

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                    enable_gqa=False):
        assert window_size == (-1, 0) and enable_gqa
        return varlen_attn_stand_in(query, key, value, cu_seq_q, max_q, scale)

    fake_varlen_attn(varlen_attn)
    monkeypatch.setattr(varlen_attention, "flash_supports", lambda query: True)  # the CUDA path, on CPU
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    compiled = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for model in (eager, compiled):
        use_varlen_attention(model)
    torch._dynamo.reset()
    counters.clear()
    compile_decoder_layers(compiled)
    generator = torch.Generator().manual_seed(0)
    graphs = []
    with torch.no_grad():
        for lengths in ([3, 5, 1, 6], [7, 2], [4, 4, 9], [5, 8, 2, 2, 3]):
            cu_seq_lens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
            inputs = {"input_ids": torch.randint(0, 100, (1, sum(lengths)), generator=generator),
                      "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
                      **varlen_attention.varlen_kwargs(cu_seq_lens, max(lengths))}
            torch.testing.assert_close(compiled(**inputs).logits, eager(**inputs).logits, rtol=1e-4, atol=1e-4)
            graphs.append(counters["stats"]["unique_graphs"])
    assert dict(counters["graph_break"]) == {}
    assert graphs[1] == graphs[2] == graphs[3]  # the second lengths compiled dynamic graphs; no more after them
    torch._dynamo.reset()


def test_flash_needs_cuda_and_half_precision():
    query = torch.zeros(3, 4, 64)
    assert not varlen_attention.flash_supports(query)
    assert not varlen_attention.flash_supports(query.bfloat16())


# -- the packed layout -----------------------------------------------------------------------------------
def hand_batch() -> Batch:
    """P = 4, T = 5 (test_micro_batching.py's). Row 2's last response token is attended but out of the loss."""
    attention_mask = torch.tensor([
        [0, 0, 1, 1,  1, 1, 1, 0, 0],  # prompt 2, response 3
        [0, 1, 1, 1,  1, 0, 0, 0, 0],  # prompt 3, response 1
        [0, 0, 0, 1,  1, 1, 1, 1, 0],  # prompt 1, response 4 (the 4th attended, not in the loss)
    ])
    response_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.float)
    return Batch({"input_ids": torch.arange(27).reshape(3, 9), "attention_mask": attention_mask,
                  "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0), "response_mask": response_mask})


def test_pack_by_hand():
    packed = pack(hand_batch())
    # row 0 keeps columns 2..6 (ids 2..6), row 1 columns 1..4 (ids 10..13), row 2 columns 3..7 (ids 21..25)
    assert packed.input_ids_1N.tolist() == [[2, 3, 4, 5, 6, 10, 11, 12, 13, 21, 22, 23, 24, 25]]
    assert packed.position_ids_1N.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 3, 4]]
    assert packed.cu_seq_lens.tolist() == [0, 5, 9, 14] and packed.cu_seq_lens.dtype == torch.int32
    assert packed.max_length == 5
    # response token t of a row is scored from start + prompt extent - 1 + t: row 0 from 0 + 2 - 1 = 1, 2, 3;
    # row 1 from 5 + 3 - 1 = 7; row 2 from 9 + 1 - 1 = 9 .. 12. The next packed token is the one scored.
    assert packed.score_positions_M.tolist() == [1, 2, 3, 7, 9, 10, 11, 12]
    labels = packed.input_ids_1N[0, packed.score_positions_M + 1].tolist()
    assert labels == [4, 5, 6, 13, 22, 23, 24, 25]  # columns 4.. of each row: its response tokens
    assert packed.rows_M.tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert packed.columns_M.tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


def test_to_batch_scatters_with_zeros_and_keeps_gradients():
    packed = pack(hand_batch())
    scores = torch.arange(1.0, 9.0).unsqueeze(0).requires_grad_()
    batch_shaped = packed.to_batch(scores)
    assert batch_shaped.tolist() == [[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [5, 6, 7, 8, 0]]
    (batch_shaped * torch.arange(5.0)).sum().backward()
    assert scores.grad.tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]  # each score's column weight


def test_pack_keeps_a_prompt_token_of_an_empty_row():
    batch = hand_batch().select([1])
    batch["attention_mask"] = torch.zeros(1, 9, dtype=torch.long)
    batch["response_mask"] = torch.zeros(1, 5)
    packed = pack(batch)
    assert packed.input_ids_1N.tolist() == [[12]]  # column P - 1 = 3 alone, nothing to score
    assert packed.cu_seq_lens.tolist() == [0, 1] and packed.score_positions_M.numel() == 0
    assert packed.to_batch(torch.zeros(1, 0)).tolist() == [[0, 0, 0, 0, 0]]


# -- the token budget -------------------------------------------------------------------------------------
def test_packed_sizes_by_hand():
    prompt, response = [2, 3, 1, 0], [3, 1, 4, 0]
    assert packed_size(prompt, response, [0, 1, 2, 3]) == 5 + 4 + 5 + 1  # an empty row packs one prompt token
    order = longest_first(prompt, response)  # [0, 2, 1, 3]: 5, 5, 4, 1 tokens
    # budget 10: [0, 2] is 10; [1, 3] is 5. Padded, [0, 2] would be 2 x (2 + 4) = 12 > 10
    assert greedy_runs(order, prompt, response, 10, packed=True) == [[0, 2], [1, 3]]
    assert greedy_runs(order, prompt, response, 10) == [[0], [2], [1, 3]]


def test_budget_counts_packed_tokens():
    batch = make_uneven_batch(vocab_size=100)
    # rows by length (prompt + response extent): 0 (6 + 16 = 22), 1 (3 + 14 = 17), 2 (5 + 9 = 14), 3 (2 + 12 = 14),
    # 5 (4 + 3 = 7), 7 (3 + 1 = 4), 4 (2 + 1 = 3), 6 (1 + 2 = 3): 84 tokens. Within 40, greedy packs [0 1] (39),
    # [2 3 5 7] (39), [4 6] (6): 3 runs. The smallest cap 3 runs meet is 31: [0] 22, [1 2] 31, [3 5 7 4 6] 31
    # (at 30: [0] [1] [2 3] [5 7 4 6], 4 runs)
    runs = plan(batch, MICRO_BATCH, MicroBatching(pack_sequences=True, max_tokens=40))
    assert runs == [[0], [1, 2], [3, 5, 7, 4, 6]]
    for run in runs:  # the budget's count is the packed row's length
        assert pack(batch.select(run)).input_ids_1N.shape[1] == packed_size(
            *(e.tolist() for e in sequence_extents(batch["attention_mask"], batch["response_mask"])), run
        )
    # padded widths need 4 micro-batches for the same budget (test_micro_batching.py)
    assert len(plan(batch, MICRO_BATCH, MicroBatching(remove_padding=True, max_tokens=40))) == 4


# -- the tiny model, packed against padded -----------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """The tiny causal LM and a value model built from it, padded and packed (the same weights)."""
    from transformers import AutoModelForCausalLM

    from rlkit.models.loading import load_critic

    padded_lm, packed_lm = (AutoModelForCausalLM.from_pretrained(tiny_model_dir) for _ in range(2))
    torch.manual_seed(0)
    padded_critic = load_critic(tiny_model_dir)
    packed_critic = load_critic(tiny_model_dir)
    packed_critic.load_state_dict(padded_critic.state_dict())
    for model in (packed_lm, packed_critic):
        use_varlen_attention(model)
    return padded_lm, packed_lm, padded_critic, packed_critic


def padded_inputs(batch: Batch) -> dict:
    return {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}


def test_packed_scorers_match_padded(models, tiny_model_dir):
    from transformers import AutoConfig

    padded_lm, packed_lm, padded_critic, packed_critic = models
    batch = make_uneven_batch(AutoConfig.from_pretrained(tiny_model_dir).vocab_size)
    mask = batch["response_mask"].bool()
    packed = pack(batch)
    with torch.no_grad():
        logprobs, entropy = PolicyScorer(padded_lm, chunk_size=7, temperature=1.0)(
            **padded_inputs(batch), response_width=batch.response_width, with_entropy=True)
        packed_logprobs, packed_entropy = PolicyScorer(packed_lm, chunk_size=7, temperature=1.0)(
            **packed.scorer_inputs(torch.device("cpu")), with_entropy=True)
        values = ValueScorer(padded_critic)(**padded_inputs(batch), response_width=batch.response_width)
        packed_values = ValueScorer(packed_critic)(**packed.scorer_inputs(torch.device("cpu")))
    assert packed_logprobs.shape == (1, int(mask.sum()))  # every response token is attended here
    for padded_out, packed_out in ((logprobs, packed_logprobs), (entropy, packed_entropy), (values, packed_values)):
        torch.testing.assert_close(packed.to_batch(packed_out)[mask], padded_out[mask], rtol=0, atol=1e-5)

    # one sequence boundary for the whole row lets every sequence but the first see the ones before it
    leaky = {**packed.scorer_inputs(torch.device("cpu")), "cu_seq_lens": torch.tensor([0, packed.cu_seq_lens[-1]])}
    with torch.no_grad():
        leaky_logprobs, _ = PolicyScorer(packed_lm, chunk_size=7, temperature=1.0)(**leaky, with_entropy=False)
    assert (packed.to_batch(leaky_logprobs)[mask] - logprobs[mask]).abs().max() > 1e-2


def test_the_packed_attention_refuses_a_padded_forward(models):
    _, packed_lm, _, _ = models
    batch = hand_batch()
    with pytest.raises(RuntimeError, match="packed forwards only"):
        packed_lm(**padded_inputs(batch))


def test_the_switch_is_not_saved_with_the_config(models, tmp_path):
    _, packed_lm, _, _ = models
    assert packed_lm.config._attn_implementation == varlen_attention.ATTENTION_NAME
    packed_lm.config.save_pretrained(tmp_path)  # what an export writes: other programs must load it
    assert varlen_attention.ATTENTION_NAME not in (tmp_path / "config.json").read_text()


def test_a_model_that_cannot_switch_is_refused(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # what transformers does for a model whose attention is not an AttentionInterface function: warn, keep it
    monkeypatch.setattr(model, "set_attn_implementation", lambda name: None)
    with pytest.raises(ConfigError, match="engine.pack_sequences"):
        use_varlen_attention(model)


# -- engines at world size 1 -----------------------------------------------------------------------------
@pytest.mark.parametrize("engine, switches", [
    ("fsdp2", {"pack_sequences": True}),
    ("fsdp2", PACKED_SWITCHES),
    ("fsdp2", {"pack_sequences": True, "gradient_checkpointing": True}),
    ("fsdp2", {"pack_sequences": True, "torch_compile": True}),
    ("deepspeed", PACKED_SWITCHES),
], ids=["fsdp2", "fsdp2-budget", "fsdp2-checkpointing", "fsdp2-compile", "deepspeed-budget"])
def test_packing_matches_fixed_micro_batches(engine, switches, tiny_model_dir, fixed):
    off = fixed(engine)
    on = measure_world1(engine, tiny_model_dir, **switches)
    assert_same(on, off)
    # without a budget the fixed runs of 2 rows are packed; within 40 tokens, test_budget_counts_packed_tokens' cut
    expected = [[1, 2, 5]] if "max_tokens_per_micro_batch" in switches else [[2, 2, 2, 2]]
    assert on["actor_sizes"] == on["critic_sizes"] == expected


def test_packing_with_lora_matches_fixed_micro_batches(tiny_model_dir, fixed):
    off = fixed("fsdp2", with_lora=True)
    on = measure_world1("fsdp2", tiny_model_dir, lora=LORA, **PACKED_SWITCHES)
    assert_same(on, off)


# -- FSDP2 at world size 2 ---------------------------------------------------------------------------------
def test_world2_packing_matches_world1_fixed_micro_batches(world2, fixed):
    packed = world2["packed"]  # the run with PACKED_SWITCHES; scripts/micro_batching_cases.py
    # alone, rank 0 (rows 0-3: 22, 17, 14, 14 tokens) packs [0 1] (39) and [2 3] (28) within 40, and rank 1
    # (rows 4-7: 17 tokens) one run; both ran 2
    assert packed["local_runs"] == [2, 1]
    assert [len(sizes) for sizes in packed["actor_sizes"]] == [2, 2]
    assert [len(sizes) for sizes in packed["critic_sizes"]] == [2, 2]
    off = fixed("fsdp2")
    assert_same({**packed, "response_mask": off["response_mask"]}, off)


# -- config (rlkit train with packing runs in test_micro_batching.py) ------------------------------
def test_packing_and_trimming_together_are_refused():
    with pytest.raises(ValueError, match="set engine.remove_padding=false"):
        EngineConfig(pack_sequences=True, remove_padding=True)
