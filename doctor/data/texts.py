"""Evaluation and calibration text: bundled corpora, tokenization once, fixed windows.

Perplexity follows the protocol of GPTQ, Wanda and SparseGPT: documents joined with a blank line, tokenized
once, cut into non-overlapping windows. Calibration draws seeded random windows from a different text.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from doctor.errors import ConfigError, DataError
from doctor.input.limits import MAX_CORPUS_BYTES, read_text
from doctor.resources import DATA
from doctor.results import TextInfo

# name -> (file, document separator, split literal special tokens)
CORPORA: dict[str, tuple[Path, str, bool]] = {
    "tinystories-valid": (DATA / "tinystories" / "valid-excerpt.txt", "<|endoftext|>", False),
    "tinystories-calib": (DATA / "tinystories" / "calib-excerpt.txt", "<|endoftext|>", False),
    "wikitext2-test": (DATA / "wikitext-2" / "wiki.test.raw", "", False),
    "wikitext2-valid": (DATA / "wikitext-2" / "wiki.valid.tokens", "", True),
}
DEFAULTS = {
    # (evaluation, calibration) for the demo model and for everything else
    "demo": ("tinystories-valid", "tinystories-calib"),
    "other": ("wikitext2-test", "wikitext2-valid"),
}


@dataclass(frozen=True)
class Text:
    name: str
    path: Path
    content: str
    split_special: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


def resolve_corpus(name: str, *, demo: bool, purpose: str) -> Text:
    """A bundled corpus by name, 'auto' for the model's default, or a path to a UTF-8 text file."""
    if name == "auto":
        name = DEFAULTS["demo" if demo else "other"][0 if purpose == "eval" else 1]
    if name in CORPORA:
        path, separator, split_special = CORPORA[name]
        raw = path.read_text(encoding="utf-8")
        docs = [d.strip() for d in raw.split(separator)] if separator else [raw]
        return Text(name, path, "\n\n".join(d for d in docs if d), split_special)
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(f"{name}: not a bundled corpus ({', '.join(CORPORA)}) nor a text file")
    try:
        content = read_text(path, MAX_CORPUS_BYTES, "the corpus")
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return Text(path.name, path, content, False)


def _encode(content: str, tokenizer, split_special: bool) -> torch.Tensor:
    kwargs = {"split_special_tokens": True} if split_special else {}
    return tokenizer(content, return_tensors="pt", **kwargs)["input_ids"][0].long()


def tokenize(text: Text, tokenizer, max_tokens: int | None = None) -> torch.Tensor:
    """The text as one id sequence (the tokenizer's BOS, if any, once at the start).

    With `max_tokens`, only a prefix ending at a line break is encoded, with a margin of 256 tokens beyond
    those needed: a cut can change only the tokens next to it, so the ids used equal the whole text's.
    """
    content = text.content
    chars = 8 * max_tokens if max_tokens else len(content)
    while chars < len(content):
        cut = content.find("\n", chars)
        if cut < 0:
            break
        ids = _encode(content[:cut], tokenizer, text.split_special)
        if ids.numel() >= max_tokens + 256:
            return ids
        chars *= 2
    return _encode(content, tokenizer, text.split_special)


def ids_sha256(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()


def eval_windows(ids: torch.Tensor, seq_len: int, max_windows: int | None) -> torch.Tensor:
    """Non-overlapping windows of `seq_len` tokens; the ragged tail is dropped as in the literature."""
    count = ids.numel() // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise DataError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: count * seq_len].view(count, seq_len)  # (windows, seq_len)


def calibration_windows(
    ids: torch.Tensor, samples: int, seq_len: int, seed: int, sampler: str = "torch"
) -> torch.Tensor:
    """`samples` random windows, deterministic for a seed, as (samples, seq_len).

    `sampler="reference"` draws the starts exactly as the GPTQ, SparseGPT and Wanda data loaders do
    (`random.seed(seed)`, then `random.randint(0, tokens - seq_len - 1)` per window).
    """
    if ids.numel() <= seq_len:
        raise DataError(f"calibration text has {ids.numel()} tokens, need more than {seq_len}")
    if sampler == "reference":
        draw = random.Random(seed)
        starts = [draw.randint(0, ids.numel() - seq_len - 1) for _ in range(samples)]
    else:
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, ids.numel() - seq_len, (samples,), generator=gen).tolist()
    return torch.stack([ids[s : s + seq_len] for s in starts])


def text_info(text: Text, windows: torch.Tensor, seed: int, preset: str | None = None) -> TextInfo:
    return TextInfo(
        preset=preset,
        corpus=text.name,
        path=text.path.name,
        sha256=text.sha256,
        tokens=int(windows.numel()),
        windows=int(windows.shape[0]),
        seq_len=int(windows.shape[1]),
        seed=seed,
        ids_sha256=ids_sha256(windows),
    )
