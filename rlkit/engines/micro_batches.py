"""How an engine cuts a batch into micro-batches, and trims each to the columns its rows use.

Shape legend: B sequences, P prompt width (left-padded), T response width (right-padded), L = P + T;
P' and T' the widths a micro-batch keeps.

Fixed size (the default): consecutive runs of `micro_batch_size` sequences, as `Batch.split` cuts them.

Padding removal (`remove_padding`). A micro-batch keeps the prompt columns from its longest prompt's first
token and the response columns up to its rows' last attended or loss token. Every column dropped is masked
out of attention for every row and real tokens keep their position ids, so the model computes the same
numbers for the real tokens (up to the rounding of matmuls of another shape); the per-token outputs are
padded back to (B, T) with zeros. This is the CPU-exact form of padding removal: rows stay padded to the
micro-batch's own widths, with no varlen packing.

Sequence packing (`pack_sequences`) is rlkit.engines.packing: here it only changes what a micro-batch's size is.

Token budget (`max_tokens`). A micro-batch's size is rows x padded width (P' + T' with padding removal,
L without), the tensor the model runs on: the budget bounds activation memory, not real tokens. Packed, it is
the number of tokens the packed row holds, the sum over its rows of max(1, prompt extent) + response extent
(packing.pack's rule). With shared prompts (`share_prompts`) a prompt counts once in each micro-batch that holds
rows of it, as packing keeps it once, plus a share of it for each row that attends to it (SHARED_KEY_WEIGHT: every
such row gathers the prompt's keys and values again, and the attention keeps those for backward); the rows are
ordered by prompt group (the groups, and the rows within a group, longest first) so that a group's rows fall in one
micro-batch where the budget allows. Otherwise sequences
are sorted longest first so that neighbours have similar widths. Each rank counts the fewest contiguous runs
of that order within the budget; forward passes of sharded models are collectives, so all ranks take the
largest count and cut their order into that many runs, with the smallest largest size (a search over the cap).
A sequence larger than the budget runs alone. Outputs come back in the batch's order.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from rlkit.batch import Batch
from rlkit.config.auto import SHARE_IF_FEWER
from rlkit.config.engines import EngineConfig
from rlkit.distributed import all_reduce_max

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicroBatching:
    """An engine's micro-batch options (EngineConfig.remove_padding, .max_tokens_per_micro_batch,
    .pack_sequences, .share_prompts). With shared prompts the budget counts each prompt once a micro-batch, as
    the packed row holds it; share_prompts may also be SHARE_IF_FEWER, which `settle_sharing` turns into true or
    false for each batch."""

    remove_padding: bool = False
    max_tokens: int | None = None
    pack_sequences: bool = False
    share_prompts: bool | str = False

    @staticmethod
    def of(config: EngineConfig) -> MicroBatching:
        sharing = config.share_prompts if config.share_prompts in (True, SHARE_IF_FEWER) else False
        return MicroBatching(config.remove_padding, config.max_tokens_per_micro_batch, config.pack_sequences,
                             sharing if config.pack_sequences is True else False)


# -- widths ---------------------------------------------------------------------------------------------
def sequence_extents(attention_mask: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the prompt columns in use counted from the prompt block's right edge, and the response columns
    in use counted from its left edge up to the last attended or loss token. (B, L), (B, T) -> (B,), (B,) long."""
    T = response_mask.shape[1]
    P = attention_mask.shape[1] - T
    prompt_used = attention_mask[:, :P] != 0
    first_prompt = prompt_used.long().argmax(dim=1)  # argmax returns the first maximum
    prompt_extent = torch.where(prompt_used.any(dim=1), P - first_prompt, 0)
    response_used = (attention_mask[:, P:] != 0) | (response_mask != 0)
    last_from_end = response_used.flip(1).long().argmax(dim=1)
    response_extent = torch.where(response_used.any(dim=1), T - last_from_end, 0)
    return prompt_extent, response_extent


def kept_widths(prompt_extent: list[int], response_extent: list[int], rows: list[int]) -> tuple[int, int]:
    """(P', T') of a micro-batch of `rows`: at least one column each, so position P' - 1 scores token 0."""
    return max(1, *(prompt_extent[i] for i in rows)), max(1, *(response_extent[i] for i in rows))


def padded_size(prompt_extent: list[int], response_extent: list[int], rows: list[int]) -> int:
    """rows x (P' + T'): the number of token slots the model runs on."""
    kept_prompt, kept_response = kept_widths(prompt_extent, response_extent, rows)
    return len(rows) * (kept_prompt + kept_response)


# What a shared prompt's keys and values, gathered again for each row that attends to it, weigh against a token of
# the budget's estimate: 2 b h_kv bytes a layer against at least (4 + 2b) 2h + 4b h_q + 4b i (rlkit.engines.memory),
# or 4b h + 4b h_q + 3b i for compiled layers: at most 0.18 for h_kv <= h_q = h <= i, less with grouped-query heads
# (0.04 for SmolLM2-135M compiled, 0.12 for Llama-2-7B: tests/unit/engines/test_memory.py).
SHARED_KEY_WEIGHT = 0.2


def packed_size(prompt_extent: list[int], response_extent: list[int], rows: list[int],
                groups: list[int] | None = None) -> int:
    """The tokens of `rows` packed into one row: each row's prompt extent (at least 1) plus its response extent.
    With `groups` (a prompt group per row, shared prompts): each group's prompt once, plus SHARED_KEY_WEIGHT of
    the prompt for each row with a response (its keys gathered again, module docstring)."""
    if groups is None:
        return sum(max(1, prompt_extent[i]) + response_extent[i] for i in rows)
    first_rows = {groups[i]: i for i in reversed(rows)}.values()
    packed = sum(response_extent[i] for i in rows) + sum(max(1, prompt_extent[i]) for i in first_rows)
    return packed + regathered_size(sum(max(1, prompt_extent[i]) for i in rows if response_extent[i] > 0))


def regathered_size(prompt_keys: int) -> int:
    """What `prompt_keys` prompt keys gathered again for the responses count under the budget (SHARED_KEY_WEIGHT)."""
    return math.ceil(SHARED_KEY_WEIGHT * prompt_keys)


def run_size(prompt_extent: list[int], response_extent: list[int], rows: list[int], packed: bool,
             groups: list[int] | None = None) -> int:
    """A micro-batch's size under the token budget: packed_size when packing (`groups` with shared prompts),
    else padded_size."""
    if packed:
        return packed_size(prompt_extent, response_extent, rows, groups)
    return padded_size(prompt_extent, response_extent, rows)


def prompt_groups(input_ids: Tensor, prompt_width: int, kept_prompt: list[int]) -> list[int]:
    """A group number per row: rows whose kept prompt tokens (the last kept_prompt[i] of the prompt block) are the
    same share one, numbered in order of first appearance. What packing with shared prompts keeps once."""
    prompt_ids = input_ids[:, :prompt_width].cpu()
    numbers: dict[tuple[int, ...], int] = {}
    return [numbers.setdefault(tuple(prompt_ids[row, prompt_width - extent :].tolist()), len(numbers))
            for row, extent in enumerate(kept_prompt)]


def trim(micro: Batch) -> tuple[dict[str, Tensor], int]:
    """The model inputs (B, P' + T') of `micro` without its all-padding columns, and T'."""
    prompt_extent, response_extent = sequence_extents(micro["attention_mask"], micro["response_mask"])
    everyone = list(range(len(micro)))
    kept_prompt, kept_response = kept_widths(prompt_extent.tolist(), response_extent.tolist(), everyone)
    columns = slice(micro.prompt_width - kept_prompt, micro.prompt_width + kept_response)
    return {key: micro[key][:, columns] for key in ("input_ids", "attention_mask", "position_ids")}, kept_response


def pad_response(values_BT: Tensor, response_width: int) -> Tensor:
    """(B, T') -> (B, T) with zeros on the right (differentiable); the tensor itself when T' == T."""
    if values_BT.shape[1] == response_width:
        return values_BT
    return F.pad(values_BT, (0, response_width - values_BT.shape[1]))


# -- grouping -------------------------------------------------------------------------------------------
def fixed_runs(num_seqs: int, micro_batch_size: int) -> list[list[int]]:
    """Consecutive runs of `micro_batch_size` rows, the last maybe shorter (Batch.split's cut)."""
    starts = range(0, num_seqs, micro_batch_size)
    return [list(range(start, min(start + micro_batch_size, num_seqs))) for start in starts]


def longest_first(prompt_extent: list[int], response_extent: list[int]) -> list[int]:
    """Row indices by P-extent + T-extent, longest first; ties keep the batch's order."""
    return sorted(range(len(prompt_extent)), key=lambda i: -(prompt_extent[i] + response_extent[i]))


def groups_longest_first(prompt_extent: list[int], response_extent: list[int], groups: list[int]) -> list[int]:
    """Row indices group by group (shared prompts): the groups by their packed size, the rows of a group by their
    response extent, longest first; ties keep the batch's order."""
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    ordered = sorted(members.values(), key=lambda rows: -packed_size(prompt_extent, response_extent, rows, groups))
    return [row for rows in ordered for row in sorted(rows, key=lambda i: -response_extent[i])]


def greedy_runs(
    order: list[int], prompt_extent: list[int], response_extent: list[int], cap: int, *, packed: bool = False,
    groups: list[int] | None = None,
) -> list[list[int]]:
    """The fewest contiguous runs of `order` whose size (run_size) stays within `cap`; a row over it runs alone.
    Greedy is optimal here: a run's size only grows as rows join it."""
    runs: list[list[int]] = []
    run: list[int] = []
    kept_prompt = kept_response = 1
    tokens = 0
    seen: set[int] = set()  # the prompt groups in the run (shared prompts)
    regathered = 0  # the prompt keys its responses gather again (shared prompts)
    for i in order:
        grown_prompt, grown_response = max(kept_prompt, prompt_extent[i]), max(kept_response, response_extent[i])
        prompt_tokens = 0 if groups is not None and groups[i] in seen else max(1, prompt_extent[i])
        row_regathered = max(1, prompt_extent[i]) if groups is not None and response_extent[i] > 0 else 0
        grown_tokens = tokens + prompt_tokens + response_extent[i]
        grown_regathered = regathered + row_regathered
        if packed:
            size = grown_tokens + regathered_size(grown_regathered)
        else:
            size = (len(run) + 1) * (grown_prompt + grown_response)
        if run and size > cap:
            runs.append(run)
            run = []
            seen.clear()
            grown_prompt, grown_response = max(1, prompt_extent[i]), max(1, response_extent[i])
            grown_tokens = max(1, prompt_extent[i]) + response_extent[i]
            grown_regathered = row_regathered
        run.append(i)
        if groups is not None:
            seen.add(groups[i])
        kept_prompt, kept_response, tokens, regathered = grown_prompt, grown_response, grown_tokens, grown_regathered
    if run:
        runs.append(run)
    return runs


def balanced_runs(
    order: list[int], prompt_extent: list[int], response_extent: list[int], num_runs: int, *, packed: bool = False,
    groups: list[int] | None = None,
) -> list[list[int]]:
    """Exactly `num_runs` contiguous runs of `order` (1 <= num_runs <= len(order)) under the smallest cap that
    greedy_runs can meet with at most `num_runs` runs (single rows over the cap run alone, as in greedy_runs):
    the largest run of 2+ rows is as small as such a cut allows, and within any budget that needs no more runs."""
    assert 1 <= num_runs <= len(order), f"{num_runs} micro-batches of {len(order)} sequences"
    low, high = 1, run_size(prompt_extent, response_extent, order, packed, groups)
    while low < high:  # the run count only falls as the cap grows
        cap = (low + high) // 2
        if len(greedy_runs(order, prompt_extent, response_extent, cap, packed=packed, groups=groups)) <= num_runs:
            high = cap
        else:
            low = cap + 1
    runs = greedy_runs(order, prompt_extent, response_extent, low, packed=packed, groups=groups)
    while len(runs) < num_runs:  # halve the largest run of 2+ rows: no run grows
        splittable = [k for k, run in enumerate(runs) if len(run) > 1]
        k = max(splittable, key=lambda k: run_size(prompt_extent, response_extent, runs[k], packed, groups))
        half = len(runs[k]) // 2
        runs[k : k + 1] = [runs[k][:half], runs[k][half:]]
    return runs


def settle_sharing(batch: Batch, batching: MicroBatching) -> MicroBatching:
    """`batching` with share_prompts true or false for `batch`: SHARE_IF_FEWER shares where that takes fewer
    micro-batches than whole rows on the rank that needs the most (a collective, like plan), and needs a token
    budget to take fewer. Other values come back as they are."""
    if batching.share_prompts != SHARE_IF_FEWER:
        return batching
    if batching.max_tokens is None or not batching.pack_sequences:
        return replace(batching, share_prompts=False)
    prompt, response = (extent.tolist() for extent in sequence_extents(batch["attention_mask"], batch["response_mask"]))
    groups = prompt_groups(batch["input_ids"], batch.prompt_width, [max(1, extent) for extent in prompt])
    shared = greedy_runs(groups_longest_first(prompt, response, groups), prompt, response, batching.max_tokens,
                         packed=True, groups=groups)
    whole = greedy_runs(longest_first(prompt, response), prompt, response, batching.max_tokens, packed=True)
    num_shared, num_whole = int(all_reduce_max(len(shared))), int(all_reduce_max(len(whole)))
    if num_shared < num_whole and not _noted_sharing:
        _noted_sharing.append(True)
        log.info("engine.share_prompts=%s: a batch runs with shared prompts, %d micro-batches instead of %d "
                 "(said for the first such batch)", SHARE_IF_FEWER, num_shared, num_whole)
    return replace(batching, share_prompts=num_shared < num_whole)


_noted_sharing: list[bool] = []  # whether settle_sharing said that a batch shares (once a process)


def plan(batch: Batch, micro_batch_size: int, batching: MicroBatching) -> list[list[int]]:
    """The rows of each micro-batch of `batch` (share_prompts settled: settle_sharing). With a token budget, a
    collective: every rank gets the same number of micro-batches (the local batches must be at least that many
    rows; equal shards are)."""
    assert batching.share_prompts in (True, False), "settle_sharing decides SHARE_IF_FEWER for the batch first"
    if batching.max_tokens is None:
        return fixed_runs(len(batch), micro_batch_size)
    packed = batching.pack_sequences
    if batching.remove_padding or packed:
        prompt, response = (extent.tolist() for extent in
                            sequence_extents(batch["attention_mask"], batch["response_mask"]))
    else:
        prompt, response = [batch.prompt_width] * len(batch), [batch.response_width] * len(batch)
    groups = None
    if packed and batching.share_prompts:
        groups = prompt_groups(batch["input_ids"], batch.prompt_width, [max(1, extent) for extent in prompt])
        order = groups_longest_first(prompt, response, groups)
    else:
        order = longest_first(prompt, response)
    local = greedy_runs(order, prompt, response, batching.max_tokens, packed=packed, groups=groups)
    if any(run_size(prompt, response, run, packed, groups) > batching.max_tokens for run in local):
        _warn_over_budget(batching.max_tokens)
    num_runs = int(all_reduce_max(len(local)))
    if num_runs > len(batch):
        raise ValueError(
            f"engine.max_tokens_per_micro_batch={batching.max_tokens}: another rank needs {num_runs} micro-batches "
            f"but this rank holds {len(batch)} sequences; give every rank the same number of sequences"
        )
    return balanced_runs(order, prompt, response, num_runs, packed=packed, groups=groups)


@functools.cache
def _warn_over_budget(max_tokens: int) -> None:
    log.warning("engine.max_tokens_per_micro_batch=%d is smaller than some sequences' size: each such "
                "sequence runs alone in its micro-batch (warned once)", max_tokens)


def in_batch_order(pieces: list[Tensor], runs: list[list[int]]) -> Tensor:
    """Per-micro-batch outputs (rows of `runs`, in that order) put back in the batch's row order."""
    stacked = torch.cat(pieces)
    rows = torch.tensor([i for run in runs for i in run], dtype=torch.long, device=stacked.device)
    if torch.equal(rows, torch.arange(len(rows), device=stacked.device)):
        return stacked
    ordered = torch.empty_like(stacked)
    ordered[rows] = stacked
    return ordered
