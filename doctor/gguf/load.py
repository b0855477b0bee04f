"""A GGUF file as a transformers model: dequantized once through transformers' GGUF loader, cached as safetensors.

`load_gguf(path)` returns the model (dtype chosen by the caller), its tokenizer and the file's facts; it is the
one entry point for anything that judges a GGUF, the patient loader included. transformers refuses to
`save_pretrained` a model it loaded from GGUF, so the cache writes the state dict with safetensors directly.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from doctor.errors import ModelLoadError
from doctor.gguf import cache
from doctor.gguf.facts import GGUFFacts, file_sha256, read_facts

log = logging.getLogger(__name__)
FACTS_FILE = "gguf-facts.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedGGUF:
    model: torch.nn.Module
    tokenizer: object
    facts: GGUFFacts
    folder: Path  # the cached safetensors checkpoint
    converted_now: bool


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_supported(facts: GGUFFacts) -> None:
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        raise ModelLoadError(f'{facts.path}: reading GGUF needs the gguf extra: pip install "model-doctor[gguf]"') \
            from None
    arch = facts.architecture
    variants = {arch, arch.replace("-", "_"), arch.replace("moe", "_moe")}
    if not variants & set(GGUF_SUPPORTED_ARCHITECTURES) and "t5" not in arch:
        import transformers

        known = ", ".join(sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")))
        raise ModelLoadError(f"{facts.path}: GGUF architecture '{arch}' cannot be dequantized by transformers "
                             f"{transformers.__version__} (it reads: {known})")


def _convert(path: Path, facts: GGUFFacts) -> Path:
    """Dequantize to float32 (exact for every GGML block type) and write a loadable checkpoint folder."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = cache.staging_dir(facts.sha256)
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except ImportError as exc:
            raise ModelLoadError(f'{path}: {_first_line(exc)}; install the gguf extra: pip install '
                                 '"model-doctor[gguf]"') from None
        except (ValueError, KeyError, OSError, RuntimeError, NotImplementedError) as exc:
            raise ModelLoadError(f"{path}: transformers cannot dequantize this GGUF: {_first_line(exc)}") from None
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the cached weights are plain floats
        config.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        (staging / FACTS_FILE).write_text(json.dumps(facts.to_record(), indent=1))
        return cache.publish(staging, facts.sha256)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_gguf(path: Path, dtype: str = "float32", device: str = "cpu") -> LoadedGGUF:
    """Model, tokenizer and facts of a GGUF file, through the SHA-256-keyed safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser().resolve()
    sha = file_sha256(path)
    facts = read_facts(path, sha256=sha)
    folder = cache.cached(sha)
    converted = folder is None
    if folder is None:
        _check_supported(facts)
        log.info("dequantizing %s into %s (once per file)", path.name, cache.entry_dir(sha))
        folder = _convert(path, facts)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype], use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: the cached conversion in {folder} cannot be loaded ({_first_line(exc)}); "
                             "delete that folder to convert again") from None
    model.eval()
    model.to(device)
    return LoadedGGUF(model=model, tokenizer=tokenizer, facts=facts, folder=folder, converted_now=converted)


def float32_linears(loaded: LoadedGGUF) -> list[tuple[str, torch.Tensor]]:
    """The cached float32 weights of every linear: a grid is only recognisable before half precision rounds it."""
    from safetensors import safe_open

    from doctor.history import linear_weights

    pairs = linear_weights(loaded.model)
    with safe_open(str(loaded.folder / "model.safetensors"), framework="pt") as fh:
        stored = set(fh.keys())
        return [(name, fh.get_tensor(f"{name}.weight") if f"{name}.weight" in stored else w.float())
                for name, w in pairs]
