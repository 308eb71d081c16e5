"""Loading Hugging Face models and tokenizers from local folders, never from the network.

A path is either a folder holding `config.json` or a hub id already in the local Hugging Face cache, which
is read from its snapshot folder there (:func:`local_folder`); both load with `local_files_only=True`, so no
request reaches the Hub. Anything missing or unreadable becomes an RlkitError that names the path and says
what to do.

Weights load in the dtype asked for (fp32 by default, the master copy an optimizer updates), not the
checkpoint's: transformers 5 would otherwise keep a bf16 checkpoint in bf16.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rlkit.errors import RlkitError

# A folder holding none of these has no tokenizer (AutoTokenizer would build an empty one from config.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def load_causal_lm(path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> nn.Module:
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


def load_tokenizer(path: str, *, trust_remote_code: bool = False, key: str = "tokenizer path"):
    """The tokenizer of a local folder (or cached hub id), with a pad token (EOS when it has none).

    `key` is the config field the path came from (model.tokenizer_path, say), named in errors.
    """
    from transformers import AutoTokenizer

    check_model_path(path, key, what="tokenizer")
    path = local_folder(path, key)
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise RlkitError(
            f"{key} '{path}' holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:4])}, ...); "
            "set model.tokenizer_path to the folder that has the tokenizer files"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (MemoryError, RecursionError):
        raise
    except Exception as error:  # tokenizer files and custom code fail in many ways: each is a bad input
        raise RlkitError(
            f"cannot load a tokenizer from {key} '{path}': {type(error).__name__}: {error}{_offline_hint(path)}"
        ) from error
    if len(tokenizer) < 2:
        raise RlkitError(f"the tokenizer in {key} '{path}' has an empty vocabulary; point it at a complete tokenizer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(
    auto_class, path: str, *, dtype: torch.dtype, trust_remote_code: bool, config_overrides: dict | None = None
) -> nn.Module:
    from transformers import AutoConfig

    check_model_path(path, "model path")
    path = local_folder(path, "model path")
    kind = auto_class.__name__.removeprefix("AutoModelFor")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        for key, value in (config_overrides or {}).items():
            setattr(config, key, value)
        model = auto_class.from_pretrained(
            path, config=config, dtype=dtype, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (MemoryError, RecursionError, torch.OutOfMemoryError):
        raise
    except Exception as error:  # a damaged weights file raises safetensors' own error type, custom code anything
        raise RlkitError(
            f"cannot load a {kind} model from '{path}': {type(error).__name__}: {error}{_offline_hint(path)}"
        ) from error
    return model.eval()


def local_folder(path: str, key: str) -> str:
    """The local folder of `path`: itself when it is a folder, else the snapshot of a hub id in the local Hugging
    Face cache. Nothing is downloaded; an id that is not cached is an RlkitError naming `key`. Engines that load
    by themselves (vLLM, SGLang) get this folder, so they never look for the id online either."""
    if Path(path).expanduser().is_dir() or not _looks_like_hub_id(path):
        return path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, local_files_only=True)
    except Exception as error:  # LocalEntryNotFoundError, or a cache entry without a snapshot
        raise RlkitError(f"{key} '{path}' is not a folder, nor in the local Hugging Face cache "
                         f"({type(error).__name__}){_offline_hint(path)}") from None


def check_model_path(path: str, key: str, *, what: str = "model") -> None:
    """A local folder must exist (and hold config.json for a model); anything else must look like a hub id.
    Errors name `key`, the config field the path came from (model.path, critic.model_path, ...)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        if what == "model" and not (folder / "config.json").is_file():
            raise RlkitError(f"{key} '{path}' has no config.json: point it at a Hugging Face model folder")
        return
    if folder.exists():
        raise RlkitError(f"{key} '{path}' is a file: give a Hugging Face {what} folder")
    if not _looks_like_hub_id(path):
        raise RlkitError(f"{key} '{path}' does not exist: give a local Hugging Face folder or 'builtin:tiny'")


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def _offline_hint(path: str) -> str:
    if Path(path).expanduser().is_dir() or not _looks_like_hub_id(path):
        return ""
    return (
        f"; rlkit never downloads: '{path}' must already be in the Hugging Face cache "
        f"(`huggingface-cli download {path}`), or give a local folder"
    )
