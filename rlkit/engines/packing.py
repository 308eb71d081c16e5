"""Sequence packing: a micro-batch's real tokens as one row, for the variable-length attention.

Shape legend: B sequences, P prompt width, T response width, L = P + T (see rlkit.batch); N packed tokens,
S + 1 = B + 1 sequence bounds, M scored tokens (the sum of the response extents).

Row i keeps its columns P - p_i .. P + t_i - 1: p_i is its prompt extent (at least 1, so that position P - 1
can score response token 0, as micro_batches.trim keeps it), t_i its response extent up to the last attended
or loss token (micro_batches.sequence_extents). The kept tokens of all rows, in row order, make one (1, N) row;
they keep their position_ids, which start at 0 in each sequence, and `cu_seq_lens` marks where each sequence
starts so that attention (rlkit.engines.varlen_attention) never crosses one. Response token t of row i is
scored from packed position start_i + p_i - 1 + t, the same token that scores it in the padded layout. The
scorer returns (1, M) outputs at those positions; `to_batch` puts them back at (i, t) of a (B, T) tensor
with zeros elsewhere, so callers and loss functions see the usual shapes.

Shared prompts (`share_prompts`, engine.share_prompts). Rows whose kept prompt tokens are the same (a GRPO
group's samples) keep that prompt once: the row holds, per prompt, the prompt and then each of its rows'
responses, each as a query sequence of its own. A response's keys are its prompt's positions followed by its
own (`key_index` gathers them; `key_seq_lens` bounds them), so it attends to the whole prompt and to its own
earlier tokens, exactly what the unshared row attends to; the prompt's keys are its own. Response token 0 of
every row of the prompt is scored from the prompt's last position, token t > 0 from the row's token t - 1;
`labels_M` names the scored tokens, since the next packed token is not always the scored one. The model then runs
each prompt once per micro-batch instead of once per row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from rlkit.batch import Batch, to_device
from rlkit.engines.micro_batches import prompt_groups, sequence_extents


@dataclass(frozen=True)
class PackedMicroBatch:
    input_ids_1N: Tensor
    position_ids_1N: Tensor
    cu_seq_lens: Tensor  # (B + 1,) int32: sequence i is packed positions cu_seq_lens[i] .. cu_seq_lens[i + 1] - 1
    max_length: int  # the longest sequence
    score_positions_M: Tensor  # packed positions whose outputs score response tokens
    rows_M: Tensor  # and where those scores go in (B, T)
    columns_M: Tensor
    batch_shape: tuple[int, int]  # (B, T)
    # shared prompts only (module docstring): the key sequences and what they gather, the scored tokens
    key_seq_lens: Tensor | None = None
    max_key_length: int | None = None
    key_index: Tensor | None = None
    labels_1M: Tensor | None = None

    def to(self, device: torch.device) -> PackedMicroBatch:
        """Every tensor on `device` (rlkit.batch.to_device: the host does not wait for the copies)."""
        return replace(self, **{item.name: to_device(getattr(self, item.name), device) for item in fields(self)
                                if isinstance(getattr(self, item.name), Tensor)})

    def scorer_inputs(self, device: torch.device) -> dict[str, Tensor | int | None]:
        """The keyword arguments of a scorer's packed forward (rlkit.engines.sequences), on `device`."""
        inputs = {
            "input_ids": to_device(self.input_ids_1N, device),
            "attention_mask": None,
            "position_ids": to_device(self.position_ids_1N, device),
            "cu_seq_lens": to_device(self.cu_seq_lens, device),
            "max_length": self.max_length,
            "score_positions": to_device(self.score_positions_M, device),
        }
        if self.key_index is not None:
            inputs.update(key_seq_lens=to_device(self.key_seq_lens, device), max_key_length=self.max_key_length,
                          key_index=to_device(self.key_index, device),
                          score_labels=to_device(self.labels_1M, device))
        return inputs

    def to_batch(self, scores_1M: Tensor) -> Tensor:
        """(1, M) per-token outputs -> (B, T) with zeros where nothing was scored (differentiable)."""
        index = (to_device(self.rows_M, scores_1M.device), to_device(self.columns_M, scores_1M.device))
        return scores_1M.new_zeros(self.batch_shape).index_put(index, scores_1M[0])


def pack(micro: Batch, *, share_prompts: bool = False) -> PackedMicroBatch:
    """The packed form of `micro`'s model inputs (on the device `micro` is on); each prompt once for the rows
    that share it with `share_prompts`."""
    prompt_extent_B, response_extent_B = sequence_extents(micro["attention_mask"], micro["response_mask"])
    if share_prompts:
        return _pack_shared(micro, prompt_extent_B.clamp(min=1).tolist(), response_extent_B.tolist())
    kept_prompt_B = prompt_extent_B.clamp(min=1)
    P, T = micro.prompt_width, micro.response_width
    columns_L = torch.arange(P + T, device=kept_prompt_B.device)
    kept_BL = (columns_L >= P - kept_prompt_B[:, None]) & (columns_L < P + response_extent_B[:, None])
    lengths_B = kept_prompt_B + response_extent_B
    starts_B = lengths_B.cumsum(0) - lengths_B
    rows_M, columns_M = (torch.arange(T, device=columns_L.device) < response_extent_B[:, None]).nonzero(as_tuple=True)
    return PackedMicroBatch(
        # boolean indexing walks (B, L) row by row: each row's kept tokens in order, the rows one after another
        input_ids_1N=micro["input_ids"][kept_BL].unsqueeze(0),
        position_ids_1N=micro["position_ids"][kept_BL].unsqueeze(0),
        cu_seq_lens=F.pad(lengths_B.cumsum(0), (1, 0)).to(torch.int32),
        max_length=int(lengths_B.max()) if len(lengths_B) else 0,
        score_positions_M=starts_B[rows_M] + kept_prompt_B[rows_M] - 1 + columns_M,
        rows_M=rows_M,
        columns_M=columns_M,
        batch_shape=(len(micro), T),
    )


def _pack_shared(micro: Batch, kept_prompt: list[int], response_extent: list[int]) -> PackedMicroBatch:
    """pack's layout with each distinct prompt once (module docstring); `kept_prompt` at least 1 a row."""
    P, T = micro.prompt_width, micro.response_width
    L = P + T
    groups: dict[int, list[int]] = {}
    for row, group in enumerate(prompt_groups(micro["input_ids"], P, kept_prompt)):
        groups.setdefault(group, []).append(row)
    taken, key_index, query_bounds, key_bounds = [], [], [0], [0]
    score_positions, rows, columns = [], [], []
    packed = 0  # tokens in the packed row so far

    def take(row: int, first_column: int, count: int) -> torch.Tensor:
        """Packed positions of `count` columns of `row` appended to the row."""
        nonlocal packed
        taken.append(row * L + first_column + torch.arange(count))
        positions = packed + torch.arange(count)
        packed += count
        query_bounds.append(packed)
        return positions

    for group_rows in groups.values():
        extent = kept_prompt[group_rows[0]]
        prompt = take(group_rows[0], P - extent, extent)
        key_index.append(prompt)
        key_bounds.append(key_bounds[-1] + extent)
        for row in group_rows:
            length = response_extent[row]
            if length == 0:  # nothing of it is scored or attended
                continue
            response = take(row, P, length)
            key_index += [prompt, response]
            key_bounds.append(key_bounds[-1] + extent + length)
            score_positions += [prompt[-1:], response[:-1]]
            rows.append(torch.full((length,), row))
            columns.append(torch.arange(length))
    device = micro["input_ids"].device
    flat = torch.cat(taken).to(device)
    rows_M, columns_M = (torch.cat(pieces or [torch.zeros(0, dtype=torch.long)]).to(device)
                         for pieces in (rows, columns))
    score_positions = score_positions or [torch.zeros(0, dtype=torch.long)]
    lengths = torch.tensor(query_bounds).diff()
    key_lengths = torch.tensor(key_bounds).diff()
    return PackedMicroBatch(
        input_ids_1N=micro["input_ids"].reshape(-1)[flat].unsqueeze(0),
        position_ids_1N=micro["position_ids"].reshape(-1)[flat].unsqueeze(0),
        cu_seq_lens=torch.tensor(query_bounds, dtype=torch.int32, device=device),
        max_length=int(lengths.max()),
        score_positions_M=torch.cat(score_positions).to(device),
        rows_M=rows_M,
        columns_M=columns_M,
        batch_shape=(len(micro), T),
        key_seq_lens=torch.tensor(key_bounds, dtype=torch.int32, device=device),
        max_key_length=int(key_lengths.max()),
        key_index=torch.cat(key_index).to(device),
        labels_1M=micro["input_ids"][rows_M, P + columns_M].unsqueeze(0),
    )
