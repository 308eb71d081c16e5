"""The GRPO workload of `rlkit bench`: a model folder, the prompts, and the run.

Every pairing trains the same thing, with a KL loss (0.001, low_var_kl) so that the reference pass runs too,
and one optimizer step per training step. Two kinds of prompts:
- synthetic (the default): `num_prompts` prompts of exactly `prompt_len` tokens, `n` responses each of
  exactly `response_len` tokens (`rollout.ignore_eos`), scored by the cheap `bench` reward;
- a dataset (`data_file`, `rlkit bench --data`): the file's prompts as a training run reads them (chat
  template when the tokenizer has one), the first `num_prompts` for the first step, the next for the next
  (no shuffling), responses ending at EOS or after `response_len` tokens, the file's own reward
  (`reward.name: auto`: GSM8K's for `rlkit data gsm8k` files); `prompt_len` is then the longest prompt kept.

Models. `tiny` is rlkit's built-in tiny model. The Qwen2.5 shapes get random bf16 weights written once
into the cache folder, with the tiny model's trained tokenizer grown to the shape's vocabulary by filler
tokens (" qa", " qb", ...), so that every id the model can sample decodes to text the reward can score.
A `--model` folder is used as it is.

Prompts reach the trainer the way a user's do, as a raw-text .jsonl file: each prompt is a sequence of
"single-token words" (ids whose text is a space and letters and that encode back to themselves alone), so
the text of k random such ids tokenizes to exactly those k ids. The lengths are checked after writing.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlkit.bench.shapes import SHAPES, TINY, Shape, meta_model
from rlkit.errors import ConfigError, DataError

RANDOM_MODEL_VERSION = "v2"  # bump when the recipe changes, so cached copies are rebuilt
_INIT_STD = 0.02  # Qwen2's initializer_range
_MAX_SHARD_BYTES = 4 * 2**30
_WORD = re.compile(r" [A-Za-z]+")


@dataclass(frozen=True)
class Workload:
    """What every pairing runs: prompts per step, responses per prompt, token lengths, step counts."""

    num_prompts: int
    n: int
    prompt_len: int  # with data_file: the longest prompt kept
    response_len: int  # with data_file: the most new tokens; responses end at EOS
    steps: int
    warmup: int
    seed: int = 0
    data_file: Path | None = None  # a prompt file instead of synthetic prompts

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


# -- models -----------------------------------------------------------------------------------------
def model_dir(shape_name: str, cache_dir: Path) -> Path:
    """Where the model folder of a --shape lives under `cache_dir` (built there by ensure_model)."""
    from rlkit.models.tiny import TINY_MODEL_NAME

    name = TINY_MODEL_NAME if shape_name == TINY else f"qwen2.5-{shape_name}-random-{RANDOM_MODEL_VERSION}"
    return Path(cache_dir) / name


def ensure_model(shape_name: str, cache_dir: Path) -> Path:
    """The model folder of a --shape under `cache_dir`, built on first use (random weights, bf16).

    Built in a temporary folder and renamed into place, so an interrupted build leaves nothing half-written.
    """
    from rlkit.models.tiny import ensure_tiny_model

    cache_dir = Path(cache_dir)
    if shape_name == TINY:
        return ensure_tiny_model(cache_dir)
    target = model_dir(shape_name, cache_dir)
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        build_random_model(SHAPES[shape_name], staging)
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a lost race with another bench: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_random_model(shape: Shape, directory: Path, *, seed: int = 0) -> Path:
    """Write a Hugging Face folder for `shape`: config, random bf16 safetensors shards, tokenizer."""
    from transformers import GenerationConfig

    from rlkit.models.tiny import EOS_TOKEN, PAD_TOKEN

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = bench_tokenizer(shape.vocab_size, seed=seed)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    config = shape.config(eos_token_id=eos_id, pad_token_id=pad_id)
    shapes = {name: tuple(parameter.shape) for name, parameter in meta_model(config).named_parameters()}
    _write_random_weights(shapes, directory, seed=seed)
    config.save_pretrained(directory)
    GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _write_random_weights(shapes: dict[str, tuple[int, ...]], directory: Path, *, seed: int) -> None:
    """N(0, 0.02) matrices, unit norm weights, zero biases, in bf16 safetensors shards of at most 4 GiB.

    Drawn shard by shard instead of building the model: a 7B model never exists in memory at once, and
    transformers' initialisation (minutes on a CPU for 7B) is skipped.
    """
    from safetensors.torch import save_file

    shards: list[list[str]] = [[]]
    shard_bytes = 0
    for name, shape in shapes.items():
        size = torch.Size(shape).numel() * 2  # bf16
        if shards[-1] and shard_bytes + size > _MAX_SHARD_BYTES:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += size
    count = len(shards)
    files = ["model.safetensors"] if count == 1 else [
        f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)
    ]
    generator = torch.Generator().manual_seed(seed)
    for names, file in zip(shards, files):
        tensors = {name: _random_tensor(name, shapes[name], generator) for name in names}
        save_file(tensors, directory / file, metadata={"format": "pt"})
    if count > 1:
        index = {
            "metadata": {"total_size": sum(torch.Size(shape).numel() * 2 for shape in shapes.values())},
            "weight_map": {name: file for names, file in zip(shards, files) for name in names},
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def _random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, _INIT_STD, generator=generator)


def bench_tokenizer(vocab_size: int, *, seed: int = 0):
    """The tiny model's tokenizer (rlkit.models.tiny) with filler tokens up to exactly `vocab_size` ids.

    Fillers are byte-level pieces " qa", " qb", ... that no merge produces: text never encodes to them, but
    every id a random model samples decodes to a word.
    """
    from tokenizers.models import BPE

    from rlkit.models.tiny import as_qwen2_tokenizer, train_tokenizer

    bpe = train_tokenizer(seed)
    trained = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    if vocab_size < len(vocab):
        raise ConfigError(f"a bench tokenizer needs at least {len(vocab)} ids; the shape asks for {vocab_size}")
    counter = 0
    while len(vocab) < vocab_size:
        piece = "Ġq" + _letters(counter)  # Ġ is the byte-level form of a space
        counter += 1
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["merges"]]
    bpe.model = BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                    fuse_unk=False)
    return as_qwen2_tokenizer(bpe)


def _letters(number: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba', ...: a distinct lowercase word per number."""
    digits = ""
    while True:
        number, digit = divmod(number, 26)
        digits = string.ascii_lowercase[digit] + digits
        if number == 0:
            return digits


# -- prompts ----------------------------------------------------------------------------------------
def single_token_words(tokenizer: Any) -> list[int]:
    """Ids whose text is a space and letters and that encode back to exactly themselves.

    Such words stay one token each when concatenated: byte-level pre-tokenizers (GPT-2, Qwen, Llama 3) split
    text before every space-letters run, and no merge crosses that split.
    """
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[token_id] for token_id in ids])
    candidates = [(token_id, text) for token_id, text in zip(ids, texts) if _WORD.fullmatch(text)]
    if not candidates:
        return []
    encoded = tokenizer([text for _, text in candidates], add_special_tokens=False)["input_ids"]
    return [token_id for (token_id, _), ids_of_text in zip(candidates, encoded) if list(ids_of_text) == [token_id]]


def write_prompts(tokenizer: Any, workload: Workload, path: Path) -> Path:
    """Write `workload.num_prompts` random prompts of exactly `workload.prompt_len` tokens as raw-text .jsonl.

    The length counts the special tokens the tokenizer adds to raw text (Llama's BOS, say), as the trainer's
    `data.prompt_format: raw` does. Raises DataError when the tokenizer cannot make such prompts.
    """
    from rlkit.data.templates import encode_prompts

    num_added = len(tokenizer("", add_special_tokens=True)["input_ids"])
    num_words = workload.prompt_len - num_added
    if num_words < 1:
        raise ConfigError(f"--prompt-len {workload.prompt_len} leaves no room beside the tokenizer's "
                          f"{num_added} special token(s); use at least {num_added + 1}")
    words = single_token_words(tokenizer)
    if not words:
        raise DataError("the tokenizer has no single-token words (a space and letters), so rlkit bench cannot "
                        "build prompts of an exact length with it; benchmark a --shape instead")
    rng = random.Random(workload.seed)
    texts = [tokenizer.decode([rng.choice(words) for _ in range(num_words)]) for _ in range(workload.num_prompts)]
    lengths = {len(ids) for ids in encode_prompts(texts, tokenizer, "raw")}
    if lengths != {workload.prompt_len}:
        raise DataError(f"bench prompts tokenized to {sorted(lengths)} tokens instead of {workload.prompt_len}: "
                        "this tokenizer merges across words; benchmark a --shape instead")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for text in texts:
            handle.write(json.dumps({"prompt": text, "answer": "", "data_source": "bench"}) + "\n")
    return path


# -- the run ----------------------------------------------------------------------------------------
def run_settings(workload: Workload, *, engine: str, rollout: str, model_path: Path, prompts_path: Path,
                 output_dir: Path) -> dict[str, Any]:
    """The GRPO run as {dotted.key: value}; the user's key=value overrides go on top.

    `prompts_path` is the synthetic prompts file, or the workload's data_file."""
    settings = {
        "engine.name": engine,
        "rollout.name": rollout,
        "model.path": str(model_path),
        "data.train_files": [str(prompts_path)],
        "data.val_files": [],
        "data.max_prompt_length": workload.prompt_len,
        "data.train_batch_size": workload.num_prompts,
        "data.shuffle": False,
        "algorithm.adv_estimator": "grpo",
        "algorithm.use_kl_loss": True,  # so that the reference log-prob pass is measured too
        "algorithm.kl_loss_coef": 0.001,
        "algorithm.kl_loss_type": "low_var_kl",
        "algorithm.mini_batch_size": workload.num_prompts,  # one optimizer step per training step
        "rollout.n": workload.n,
        "rollout.temperature": 1.0,
        "rollout.max_new_tokens": workload.response_len,
        "optim.lr": 1e-6,  # the embedded default's 5e-3 would blow up a 7B model and skip its updates
        "trainer.total_steps": workload.total_steps,
        "trainer.output_dir": str(output_dir),
        "trainer.seed": workload.seed + 1,
        "trainer.loggers": ["jsonl"],
        "trainer.progress_bar": False,
        "trainer.val_before_train": False,
        "trainer.test_freq": 0,
        "trainer.save_freq": 0,
        "trainer.save_at_end": False,
        "trainer.resume": "disable",
    }
    if workload.data_file is None:
        return {**settings, "data.prompt_format": "raw", "rollout.ignore_eos": True, "reward.name": "bench"}
    return {
        **settings,
        "data.filter_overlong_prompts": True,
        # only the prompts the steps use are read and tokenized: step k takes the k-th block of num_prompts
        "data.max_train_samples": workload.num_prompts * workload.total_steps,
        "rollout.ignore_eos": False,
    }
