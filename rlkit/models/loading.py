"""Loading Hugging Face models and tokenizers from local folders, never from the network.

A path is either a folder holding `config.json` or a hub id already in the local Hugging Face cache;
both load with `local_files_only=True`. Anything missing or unreadable becomes an RlkitError that names
the path and says what to do.

Weights load in the dtype asked for (fp32 by default, the master copy an optimizer updates), not the
checkpoint's: transformers 5 would otherwise keep a bf16 checkpoint in bf16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rlkit.errors import RlkitError

BUILTIN_TINY = "builtin:tiny"


def resolve_model_path(path: str, cache_dir: Path) -> str:
    """`builtin:tiny` -> the tiny model under `cache_dir` (built on first use); anything else unchanged."""
    if path == BUILTIN_TINY:
        from rlkit.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model(cache_dir))
    return path


def load_causal_lm(
    path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> nn.Module:
    """A causal LM (`AutoModelForCausalLM`) on CPU, in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, path, dtype=dtype, trust_remote_code=trust_remote_code)


def load_critic(path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> nn.Module:
    """A value model: `AutoModelForTokenClassification` with one label, on CPU, in eval mode.

    From a causal-LM folder the value head is new (drawn from torch's RNG: seed it for identical copies on
    every rank). Its dropout is switched off, as verl does, so that values do not depend on the world size.
    """
    from transformers import AutoModelForTokenClassification

    return _from_pretrained(
        AutoModelForTokenClassification,
        path,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        config_overrides={"num_labels": 1, "classifier_dropout": 0.0},
    )


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """The tokenizer of a local folder (or cached hub id), with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    _check_path(path, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise RlkitError(f"cannot load a tokenizer from '{path}': {error}{_offline_hint(path)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(
    auto_class, path: str, *, dtype: torch.dtype, trust_remote_code: bool, config_overrides: dict | None = None
) -> nn.Module:
    from transformers import AutoConfig

    _check_path(path, "model")
    kind = auto_class.__name__.removeprefix("AutoModelFor")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        for key, value in (config_overrides or {}).items():
            setattr(config, key, value)
        model = auto_class.from_pretrained(
            path, config=config, dtype=dtype, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as error:
        raise RlkitError(f"cannot load a {kind} model from '{path}': {error}{_offline_hint(path)}") from error
    return model.eval()


def _check_path(path: str, what: str) -> None:
    """A local folder must exist (and hold config.json for a model); anything else must look like a hub id."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        if what == "model" and not (folder / "config.json").is_file():
            raise RlkitError(f"model folder '{path}' has no config.json: point it at a Hugging Face model folder")
        return
    if not _looks_like_hub_id(path):
        raise RlkitError(f"{what} path '{path}' does not exist: give a local Hugging Face folder or 'builtin:tiny'")


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def _offline_hint(path: str) -> str:
    if Path(path).expanduser().is_dir() or not _looks_like_hub_id(path):
        return ""
    return (
        f"; rlkit never downloads: '{path}' must already be in the Hugging Face cache "
        f"(`huggingface-cli download {path}`), or give a local folder"
    )
