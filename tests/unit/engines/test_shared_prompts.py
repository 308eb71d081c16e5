"""engine.share_prompts: the rows of a packed micro-batch that share a prompt keep it once (rlkit/engines/packing.py)
and each response attends to that copy (rlkit/engines/varlen_attention.py).

From the bottom up: attention with key sequences longer than their queries against dense attention under the
mask that says what each query may see; the shared layout of a hand-made batch; the tiny model's scorers on it
against padded rows; then FSDP2 (with a token budget, with torch.compile) and DeepSpeed ZeRO-3 with shared
prompts against the same engines packing every row whole, on a batch of prompt groups; last, the option's rules.
The CUDA kernel path is tests/gpu/test_packing_gpu.py.
"""

from dataclasses import replace

import pytest
import torch
from micro_batching_cases import (
    MICRO_BATCH,
    PACKED_SWITCHES,
    PROMPT_GROUPS,
    assert_same,
    make_grouped_batch,
    measure_world1,
)
from test_packing import eager_attention, hand_batch, padded_inputs, random_qkv

from rlkit.config.auto import SHARE_IF_FEWER
from rlkit.config.schema import EngineConfig
from rlkit.engines.micro_batches import (
    SHARED_KEY_WEIGHT,
    MicroBatching,
    greedy_runs,
    groups_longest_first,
    packed_size,
    plan,
    prompt_groups,
    regathered_size,
    sequence_extents,
    settle_sharing,
)
from rlkit.engines import varlen_attention
from rlkit.engines.packing import pack
from rlkit.engines.sequences import PolicyScorer, ValueScorer
from rlkit.engines.varlen_attention import per_sequence_sdpa, varlen_attention_forward, varlen_kwargs
from rlkit.errors import ConfigError


# -- the attention -----------------------------------------------------------------------------------------
def test_a_query_sequence_sees_its_keys_up_to_its_own_end():
    """Queries 0-2 against keys 0-2 (a prompt), queries 3-6 against keys 0-2 then 3-6 (a response after it):
    each query sees the keys that end no later than it does, counted from the end of its key sequence."""
    query, key, value = random_qkv(num_tokens=7)
    cu_q = torch.tensor([0, 3, 7], dtype=torch.int32)
    key_index = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5, 6])
    cu_k = torch.tensor([0, 3, 10], dtype=torch.int32)
    output = per_sequence_sdpa(query, key[key_index], value[key_index], cu_q, scale=None, key_seq_lens=cu_k)
    # the same as one causal sequence of 7: the response's keys are exactly what it sees there
    allowed = torch.ones(7, 7).tril().bool()
    torch.testing.assert_close(output, eager_attention(query, key, value, allowed), rtol=1e-5, atol=1e-5)


def test_the_attention_function_gathers_each_sequences_keys():
    query, key, value = random_qkv(num_tokens=7)
    as_transformers = [x.transpose(0, 1).unsqueeze(0) for x in (query, key, value)]
    kwargs = varlen_kwargs(torch.tensor([0, 3, 7], dtype=torch.int32), 4,
                           key_seq_lens=torch.tensor([0, 3, 10], dtype=torch.int32), max_key_length=7,
                           key_index=torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5, 6]))
    output, _ = varlen_attention_forward(None, *as_transformers, None, scaling=None, **kwargs)
    allowed = torch.ones(7, 7).tril().bool()
    torch.testing.assert_close(output[0], eager_attention(query, key, value, allowed), rtol=1e-5, atol=1e-5)
    # without the gathered keys each sequence sees only itself: the response loses its prompt
    alone, _ = varlen_attention_forward(None, *as_transformers, None, scaling=None,
                                        **varlen_kwargs(torch.tensor([0, 3, 7], dtype=torch.int32), 4))
    assert (alone[0, 3:] - output[0, 3:]).abs().max() > 1e-2


# -- the shared layout -----------------------------------------------------------------------------------
def shared_hand_batch():
    """hand_batch with row 2 on row 0's prompt: rows 0 and 2 share a prompt of 2 tokens, row 1 has its own."""
    batch = hand_batch()
    for key in ("input_ids", "attention_mask"):
        batch[key][2, :4] = batch[key][0, :4]
    batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
    return batch


def test_pack_shared_by_hand():
    packed = pack(shared_hand_batch(), share_prompts=True)
    # row 0's prompt (ids 2, 3), row 0's response (4, 5, 6), row 2's response (22..25); row 1 whole (10..13)
    assert packed.input_ids_1N.tolist() == [[2, 3, 4, 5, 6, 22, 23, 24, 25, 10, 11, 12, 13]]
    assert packed.position_ids_1N.tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 5, 0, 1, 2, 3]]
    assert packed.cu_seq_lens.tolist() == [0, 2, 5, 9, 12, 13] and packed.max_length == 4
    # keys: the prompt; the prompt and row 0's response; the prompt and row 2's; row 1's prompt; it and its response
    assert packed.key_index.tolist() == [0, 1, 0, 1, 2, 3, 4, 0, 1, 5, 6, 7, 8, 9, 10, 11, 9, 10, 11, 12]
    assert packed.key_seq_lens.tolist() == [0, 2, 7, 13, 16, 20] and packed.max_key_length == 6
    # token 0 of rows 0 and 2 from the prompt's last position (1); later tokens from the row's previous one
    assert packed.score_positions_M.tolist() == [1, 2, 3, 1, 5, 6, 7, 11]
    assert packed.labels_1M.tolist() == [[4, 5, 6, 22, 23, 24, 25, 13]]
    assert packed.rows_M.tolist() == [0, 0, 0, 2, 2, 2, 2, 1]
    assert packed.columns_M.tolist() == [0, 1, 2, 0, 1, 2, 3, 0]


def test_rows_with_other_prompts_share_nothing():
    batch = hand_batch()  # three different prompts
    shared, whole = pack(batch, share_prompts=True), pack(batch)
    assert sorted(shared.input_ids_1N[0].tolist()) == sorted(whole.input_ids_1N[0].tolist())
    assert shared.labels_1M.tolist() == [whole.input_ids_1N[0, whole.score_positions_M + 1].tolist()]


# -- the tiny model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from test_packing import models as packing_models

    return packing_models.__wrapped__(tiny_model_dir)


def test_shared_prompts_score_what_padded_rows_score(models, tiny_model_dir):
    from transformers import AutoConfig

    padded_lm, packed_lm, padded_critic, packed_critic = models
    batch = make_grouped_batch(AutoConfig.from_pretrained(tiny_model_dir).vocab_size)
    mask = batch["response_mask"].bool()
    shared = pack(batch, share_prompts=True)
    assert shared.input_ids_1N.shape[1] == pack(batch).input_ids_1N.shape[1] - (6 + 6 + 2 + 1)  # 4 prompts saved
    with torch.no_grad():
        logprobs, entropy = PolicyScorer(padded_lm, chunk_size=7, temperature=1.0)(
            **padded_inputs(batch), response_width=batch.response_width, with_entropy=True)
        shared_logprobs, shared_entropy = PolicyScorer(packed_lm, chunk_size=7, temperature=1.0)(
            **shared.scorer_inputs(torch.device("cpu")), with_entropy=True)
        values = ValueScorer(padded_critic)(**padded_inputs(batch), response_width=batch.response_width)
        shared_values = ValueScorer(packed_critic)(**shared.scorer_inputs(torch.device("cpu")))
    for padded_out, shared_out in ((logprobs, shared_logprobs), (entropy, shared_entropy), (values, shared_values)):
        torch.testing.assert_close(shared.to_batch(shared_out)[mask], padded_out[mask], rtol=0, atol=1e-5)


# -- engines at world size 1 -----------------------------------------------------------------------------
@pytest.mark.parametrize("engine, switches", [
    ("fsdp2", {"pack_sequences": True}),
    ("fsdp2", PACKED_SWITCHES),
    ("fsdp2", {"pack_sequences": True, "torch_compile": True}),
    ("deepspeed", PACKED_SWITCHES),
], ids=["fsdp2", "fsdp2-budget", "fsdp2-compile", "deepspeed-budget"])
def test_shared_prompts_match_whole_rows(engine, switches, tiny_model_dir):
    if engine == "deepspeed":
        pytest.importorskip("deepspeed")
    whole = measure_world1(engine, tiny_model_dir, grouped=True, **switches)
    shared = measure_world1(engine, tiny_model_dir, grouped=True, share_prompts=True, **switches)
    assert_same(shared, whole)
    if "max_tokens_per_micro_batch" in switches:  # a shared prompt counts once: never more micro-batches
        assert len(shared["actor_sizes"]) <= len(whole["actor_sizes"])


@pytest.mark.parametrize("budget, shares", [(80, True), (45, False)], ids=["saves-one", "same-count"])
def test_sharing_if_fewer_micro_batches_shares_only_where_it_saves_one(budget, shares, tiny_model_dir):
    """`if_fewer_micro_batches` (what `auto` resolves to on a GPU): with budget 80 the grouped batch takes one
    shared micro-batch against two whole ones, so it shares (same numbers as whole rows); with 45 it takes two
    either way, so it runs exactly the whole rows' micro-batches."""
    switches = {"pack_sequences": True, "max_tokens_per_micro_batch": budget}
    whole = measure_world1("fsdp2", tiny_model_dir, grouped=True, **switches)
    chosen = measure_world1("fsdp2", tiny_model_dir, grouped=True, share_prompts=SHARE_IF_FEWER, **switches)
    assert_same(chosen, whole)
    if shares:  # the micro-batches' rows, as the one rank saw them
        assert (chosen["actor_sizes"], whole["actor_sizes"]) == ([[8]], [[2, 6]])
        assert (chosen["critic_sizes"], whole["critic_sizes"]) == ([[8]], [[2, 6]])
    else:
        assert chosen["actor_sizes"] == whole["actor_sizes"] and chosen["critic_sizes"] == whole["critic_sizes"]


def test_world2_shares_by_the_rank_that_needs_the_most(world2, tiny_model_dir):
    """The grouped batch under a budget of 40 at world size 2: rank 0 (rows 0-3) needs 3 micro-batches whole and 2
    shared, rank 1 (rows 4-7) one either way, so both ranks share and run 2 (scripts/micro_batching_cases.py);
    the numbers are those of whole rows at world size 1."""
    shared = world2["shared_if_fewer"]
    assert [len(sizes) for sizes in shared["actor_sizes"]] == [2, 2]
    assert [len(sizes) for sizes in shared["critic_sizes"]] == [2, 2]
    assert shared["local_runs"] == [3, 1]  # whole rows, each rank alone
    whole = measure_world1("fsdp2", tiny_model_dir, grouped=True, **PACKED_SWITCHES)
    assert_same({**shared, "response_mask": whole["response_mask"]}, whole)


def test_settle_sharing_decides_each_batch():
    batch = make_grouped_batch(vocab_size=100)
    fewer = MicroBatching(pack_sequences=True, share_prompts=SHARE_IF_FEWER)
    # shared against whole micro-batches (the budget test above): 32: 3 against 4, 45: 2 and 2, 80: 1 against 2
    for budget, shares in ((32, True), (45, False), (80, True)):
        assert settle_sharing(batch, replace(fewer, max_tokens=budget)).share_prompts is shares
    assert settle_sharing(batch, fewer).share_prompts is False  # no budget: the same count either way
    assert settle_sharing(batch, replace(fewer, pack_sequences=False, max_tokens=80)).share_prompts is False
    for given in (True, False):  # a settled value stays
        assert settle_sharing(batch, replace(fewer, share_prompts=given, max_tokens=32)).share_prompts is given
    with pytest.raises(AssertionError, match="settle_sharing"):
        plan(batch, MICRO_BATCH, replace(fewer, max_tokens=32))


def test_the_grouped_batch_shares_as_its_groups_say(tiny_model_dir):
    from transformers import AutoConfig

    batch = make_grouped_batch(AutoConfig.from_pretrained(tiny_model_dir).vocab_size)
    packed = pack(batch, share_prompts=True)
    # a prompt sequence per group, then one response sequence per row
    assert len(packed.cu_seq_lens) - 1 == len(PROMPT_GROUPS) + len(batch)


# -- the token budget -------------------------------------------------------------------------------------
def test_the_budget_counts_a_shared_prompt_once_per_micro_batch():
    assert SHARED_KEY_WEIGHT == 0.2  # the counts below: each response's prompt keys gathered again weigh 0.2
    prompt, response, groups = [6, 6, 6, 2], [16, 14, 9, 12], [0, 0, 0, 1]
    # packed: 6 + (16 + 14 + 9) + 2 + 12 = 59; the responses gather 6 + 6 + 6 + 2 = 20 prompt keys again: + 4
    assert packed_size(prompt, response, [0, 1, 2, 3], groups) == 59 + 4
    assert packed_size(prompt, response, [0, 1, 2, 3]) == 3 * 6 + (16 + 14 + 9) + 2 + 12  # whole rows
    # budget 40: rows 0 and 1 count 6 + 16 + 14 + ceil(0.2 x 12) = 39; row 2 would make 49, so it starts the next
    # run with its group's prompt again (6 + 9 + 2), and row 3 adds its own (2 + 12, 8 keys in all: + 2): 31
    assert greedy_runs([0, 1, 2, 3], prompt, response, 40, packed=True, groups=groups) == [[0, 1], [2, 3]]
    assert greedy_runs([0, 1, 2, 3], prompt, response, 40, packed=True) == [[0], [1, 2], [3]]  # 22, 35, 14


def test_a_shared_budget_keeps_groups_together_and_counts_the_packed_row():
    batch = make_grouped_batch(vocab_size=100)
    prompt, response = (e.tolist() for e in sequence_extents(batch["attention_mask"], batch["response_mask"]))
    groups = prompt_groups(batch["input_ids"], batch.prompt_width, [max(1, extent) for extent in prompt])
    assert [[row for row, group in enumerate(groups) if group == number] for number in range(4)] == PROMPT_GROUPS
    # groups by packed size, longest first: 6 + 39, 2 + 13, 4 + 3, 1 + 3; rows by response length within each
    assert groups_longest_first(prompt, response, groups) == [0, 1, 2, 3, 4, 5, 6, 7]
    for budget, shared_runs, whole_runs in ((32, 3, 4), (45, 2, 2), (80, 1, 2)):
        runs = plan(batch, MICRO_BATCH, MicroBatching(pack_sequences=True, share_prompts=True, max_tokens=budget))
        whole = plan(batch, MICRO_BATCH, MicroBatching(pack_sequences=True, max_tokens=budget))
        assert (len(runs), len(whole)) == (shared_runs, whole_runs)
        for run in runs:  # the budget's count: the shared packed row's length and the prompt keys gathered again
            packed = pack(batch.select(run), share_prompts=True)
            regathered = int(packed.key_seq_lens[-1]) - packed.input_ids_1N.shape[1]
            count = packed.input_ids_1N.shape[1] + regathered_size(regathered)
            assert count == packed_size(prompt, response, run, groups) and (count <= budget or len(run) == 1)


# -- the option --------------------------------------------------------------------------------------------
def test_sharing_without_packing_is_refused():
    for sharing in (True, SHARE_IF_FEWER):
        with pytest.raises(ValueError, match=f"engine.share_prompts={str(sharing).lower()} needs engine.pack_seq"):
            EngineConfig(share_prompts=sharing, pack_sequences=False)
        assert not MicroBatching.of(EngineConfig(share_prompts=sharing, pack_sequences="auto")).share_prompts
    assert MicroBatching.of(EngineConfig(share_prompts=SHARE_IF_FEWER, pack_sequences=True)).share_prompts == \
        SHARE_IF_FEWER
    with pytest.raises(ValueError, match="'if_fewer_micro_batches' or 'auto'"):
        EngineConfig(share_prompts="sometimes")


def test_auto_shares_where_it_saves_a_micro_batch_and_sharing_needs_packing_and_a_kernel_that_serves_it():
    from rlkit.config.auto import Choice
    from rlkit.trainer.speed import MachineFacts, choose_prompt_sharing

    gpu = MachineFacts(on_cuda=True, flash_varlen=True, flash_keys_at_end=True)
    misaligned = MachineFacts(on_cuda=True, flash_varlen=True, flash_keys_at_end=False)
    assert choose_prompt_sharing(EngineConfig(), Choice(True, "CUDA"), gpu).value == SHARE_IF_FEWER
    assert choose_prompt_sharing(EngineConfig(), Choice(True, "CUDA"), misaligned).value is False
    assert choose_prompt_sharing(EngineConfig(share_prompts=True), Choice(True, "CUDA"), gpu).value is True
    assert choose_prompt_sharing(EngineConfig(), Choice(False, "fp32 compute"), gpu).value is False
    assert choose_prompt_sharing(EngineConfig(), Choice(True, "set"), MachineFacts(on_cuda=False)).value is False
    assert choose_prompt_sharing(EngineConfig(share_prompts=False), Choice(True, "CUDA"), gpu).value is False
    for sharing, shown in ((True, "true"), (SHARE_IF_FEWER, "if_fewer_micro_batches")):
        with pytest.raises(ConfigError, match=f"engine.share_prompts={shown} needs packing"):
            choose_prompt_sharing(EngineConfig(share_prompts=sharing), Choice(False, "fp32 compute"), gpu)
        with pytest.raises(ConfigError, match="checked at the start"):
            choose_prompt_sharing(EngineConfig(share_prompts=sharing), Choice(True, "CUDA"), misaligned)


@pytest.fixture
def fake_kernel(monkeypatch):
    """Installs a stand-in for torch's varlen_attn (the 2.11 signature), with the key alignment it is given."""

    def install(keys_at_end: bool):
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                        enable_gqa=False):
            assert window_size == (-1, 0)
            if keys_at_end:
                return per_sequence_sdpa(query, key, value, cu_seq_q, scale=scale, key_seq_lens=cu_seq_k)
            # sdpa's own causal rule: the first query with the first key
            return torch.nn.functional.scaled_dot_product_attention(
                query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), is_causal=True, scale=scale,
                enable_gqa=enable_gqa).transpose(0, 1)

        monkeypatch.setattr(varlen_attention, "_torch_varlen_attn", lambda: varlen_attn)
        monkeypatch.setattr(varlen_attention, "_resolved", {})

    return install


@pytest.mark.parametrize("keys_at_end", [True, False])
def test_the_start_checks_how_the_kernel_aligns_longer_keys(fake_kernel, keys_at_end):
    fake_kernel(keys_at_end)
    assert varlen_attention.flash_aligns_keys_at_end("cpu") is keys_at_end
