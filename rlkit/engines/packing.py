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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rlkit.batch import Batch
from rlkit.engines.micro_batches import sequence_extents


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

    def scorer_inputs(self, device: torch.device) -> dict[str, Tensor | int | None]:
        """The keyword arguments of a scorer's packed forward (rlkit.engines.sequences), on `device`."""
        return {
            "input_ids": self.input_ids_1N.to(device),
            "attention_mask": None,
            "position_ids": self.position_ids_1N.to(device),
            "cu_seq_lens": self.cu_seq_lens.to(device),
            "max_length": self.max_length,
            "score_positions": self.score_positions_M.to(device),
        }

    def to_batch(self, scores_1M: Tensor) -> Tensor:
        """(1, M) per-token outputs -> (B, T) with zeros where nothing was scored (differentiable)."""
        index = (self.rows_M.to(scores_1M.device), self.columns_M.to(scores_1M.device))
        return scores_1M.new_zeros(self.batch_shape).index_put(index, scores_1M[0])


def pack(micro: Batch) -> PackedMicroBatch:
    """The packed form of `micro`'s model inputs (on the device `micro` is on)."""
    prompt_extent_B, response_extent_B = sequence_extents(micro["attention_mask"], micro["response_mask"])
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
