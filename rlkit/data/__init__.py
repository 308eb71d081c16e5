"""Prompt data: read files or built-in tasks, render and tokenize prompts, order them into batches.

The trainer needs two names from here: :func:`load_prompt_dataset` and :class:`EpochSampler`.
"""

from rlkit.data.prompts import PromptDataset, PromptRecord, load_prompt_dataset
from rlkit.data.sampler import EpochSampler

__all__ = ["EpochSampler", "PromptDataset", "PromptRecord", "load_prompt_dataset"]
