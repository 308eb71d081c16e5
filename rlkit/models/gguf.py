"""Import a GGUF file (llama.cpp, ollama) as a Hugging Face folder rlkit, vLLM and SGLang load: `rlkit model import`.

transformers reads the GGUF (`from_pretrained(folder, gguf_file=name)`: config, tokenizer and weights,
dequantized to float); that model cannot be saved as it is (transformers marks it quantized and refuses
`save_pretrained`), so its weights are copied, cast to bf16, into a fresh model of the same config without the
quantization marker, which saves like any other. The tokenizer is saved as `tokenizer.json` with the class
`PreTrainedTokenizerFast`, which every transformers version (4.x and 5.x) loads as it is: a model-specific
class such as LlamaTokenizer would rebuild its own pre-tokenizer around the vocabulary and change the ids.

The folder is written into a temporary sibling and renamed into place, so OUT appears whole or not at all;
an existing non-empty OUT is refused, never replaced.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlkit.errors import RlkitError

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'rlkit[gguf]'"
SAVED_DTYPE = torch.bfloat16
# Loads tokenizer.json exactly as saved in transformers 4.x and 5.x (where it names TokenizersBackend).
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


@dataclass(frozen=True)
class ImportedModel:
    """What `import_gguf` wrote."""

    path: Path
    architecture: str  # the GGUF's general.architecture (llama, qwen2, ...)
    model_class: str  # the transformers class saved (LlamaForCausalLM, ...)
    num_parameters: int
    vocab_size: int
    seconds: float


def import_gguf(gguf_file: str | Path, out: str | Path) -> ImportedModel:
    """Convert `gguf_file` into the Hugging Face folder `out` (bf16 safetensors, config, generation config,
    tokenizer with its chat template). RlkitError, before any work, for a missing `gguf` package, a path that
    is not a GGUF file, a truncated or corrupt file, an architecture transformers cannot read, or a non-empty
    `out`."""
    start = time.perf_counter()
    gguf_file, out = Path(gguf_file).expanduser(), Path(out).expanduser()
    check_output_folder(out)
    check_gguf_file(gguf_file)
    require_gguf_packages()
    architecture = read_architecture(gguf_file)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would follow the folder through the rename
        model_class, num_parameters, vocab_size = _write_folder(gguf_file, staging, architecture)
        if out.exists():
            out.rmdir()  # empty (checked above); a directory that is not empty makes rmdir fail, never lose files
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # ours alone: a failed import leaves nothing behind
        raise
    return ImportedModel(out, architecture, model_class, num_parameters, vocab_size, time.perf_counter() - start)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# checks, cheapest first
# ---------------------------------------------------------------------------------------------
def check_output_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RlkitError(f"output folder {out} exists and is not empty; choose a new folder")
    if not out.parent.is_dir():
        raise RlkitError(f"the folder {out.parent} that would hold {out.name} does not exist; create it first")


def check_gguf_file(path: Path) -> None:
    """The path is a readable file that starts with the GGUF magic bytes."""
    if not path.exists():
        raise RlkitError(f"{path} does not exist; give the path of a .gguf file")
    if not path.is_file():
        raise RlkitError(f"{path} is not a file; give the path of a .gguf file (not a folder)")
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise RlkitError(
            f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'); give a .gguf file as llama.cpp "
            "or ollama write them (a Hugging Face folder needs no import)"
        )


def require_gguf_packages() -> None:
    """transformers reads GGUF files with the `gguf` package, and loads them through accelerate."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise RlkitError(f"reading GGUF files needs {' and '.join(missing)}: {INSTALL_HINT}")


def read_architecture(path: Path) -> str:
    """general.architecture from the GGUF header; RlkitError for a truncated or corrupt file (GGUFReader maps
    every tensor, so a file cut short fails here) or an architecture transformers cannot read."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    except (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError) as error:
        raise RlkitError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}); download or copy it again "
            "and compare its checksum"
        ) from error
    supported = _supported_architectures()
    if supported is not None and not supported & _transformers_names(architecture):
        raise RlkitError(
            f"{path} holds a '{architecture}' model, which transformers cannot read from GGUF (it reads: "
            f"{', '.join(sorted(supported))}); convert it with the model's own tools, or use its Hugging Face folder"
        )
    return architecture


def _supported_architectures() -> set[str] | None:
    """The model architectures this transformers reads from GGUF; None when it does not say (loading decides)."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return None
    return set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata sections, not models


def _transformers_names(architecture: str) -> set[str]:
    """The names transformers may file a GGUF architecture under: qwen2moe -> qwen2_moe, gpt-oss -> gpt_oss,
    t5encoder -> t5."""
    underscored = architecture.replace("-", "_")
    return {architecture, underscored, re.sub(r"moe$", "_moe", underscored), re.sub(r"encoder$", "", underscored)}


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------
def _write_folder(gguf_file: Path, out: Path, architecture: str) -> tuple[str, int, int]:
    """Read the GGUF with transformers and save model, generation config and tokenizer into `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per tensor drowns the one line the command prints
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (MemoryError, RecursionError):
        raise
    except Exception as error:  # transformers' GGUF paths fail in many ways: each is a file it cannot read
        raise RlkitError(
            f"transformers cannot read the '{architecture}' model in {gguf_file}: {type(error).__name__}: {error}"
        ) from error
    state = float_state_dict(loaded)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain bf16
    model = type(loaded)(config).to(SAVED_DTYPE)  # the loaded class, under the loaded (quantization-free) config
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out)  # config.json (dtype bfloat16), model.safetensors, generation_config.json
    _declared_special_tokens(gguf_file, tokenizer)
    tokenizer.save_pretrained(out)
    _portable_tokenizer_class(out / "tokenizer_config.json")
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    return type(model).__name__, num_parameters, len(tokenizer)


def _declared_special_tokens(gguf_file: Path, tokenizer: Any) -> None:
    """The end, start and padding tokens the GGUF declares (`tokenizer.ggml.*_token_id`), on the tokenizer:
    transformers 5.12 read `<|im_start|>` as the end token of a ChatML GGUF, whose responses would then never
    end where the chat template ends a turn."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    for role, key in (("eos", "eos_token_id"), ("bos", "bos_token_id"), ("pad", "padding_token_id")):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            token = tokenizer.convert_ids_to_tokens(int(field.parts[field.data[0]][0]))
            if token is not None and getattr(tokenizer, f"{role}_token") != token:
                setattr(tokenizer, f"{role}_token", token)


def float_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as plain float tensors. transformers dequantizes GGUF weights while loading on a CPU;
    where a version keeps them quantized, its `dequantize()` is asked first."""
    if not _all_plain_floats(model):
        try:
            model = model.dequantize() or model
        except NotImplementedError:
            pass
    if not _all_plain_floats(model):
        import transformers

        raise RlkitError(
            f"transformers {transformers.__version__} kept this GGUF model's weights quantized and cannot "
            "dequantize them; run the import with another transformers version (it was tested with 5.24)"
        )
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def _all_plain_floats(model: torch.nn.Module) -> bool:
    return all(type(p.data) is torch.Tensor and p.is_floating_point() for p in model.parameters())


def _portable_tokenizer_class(config_file: Path) -> None:
    settings = json.loads(config_file.read_text())
    settings["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    config_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
