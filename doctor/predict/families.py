"""Which family a model belongs to, from what the model says about itself, through an explicit alias table.

Names are split into tokens at anything but letters, digits and dots, and an alias matches whole tokens in a
row, so `llama-30b` is LLaMA (a size after `llama`), never LLaMA-3, and `Qwen2.5-0.5B` is Qwen2.5, not Qwen2.
An alias token matches a name token that equals it or extends it by a dotted version (`3` matches `3.1`);
`#size` matches a parameter count (`7b`, `135m`). Aliases are tried in the table's order (specific first).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from doctor.resources import PREDICTORS_DIR

ALIASES = PREDICTORS_DIR / "data" / "family_aliases.csv"
_SIZE = re.compile(r"^\d+(\.\d+)?[bmk]$")
# Vocabulary sizes that only one family's tokenizer has (a last resort when no name says it); Qwen2/2.5/3 share
# theirs, as do SmolLM and SmolLM2, so those need a name
TOKENIZER_VOCAB = {128256: "LLaMA-3"}


def tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9.]+", name.lower()) if t and t != "."]


def _token_match(alias: str, token: str) -> bool:
    if alias == "#size":
        return bool(_SIZE.match(token))
    return token == alias or token.startswith(alias + ".") and token[len(alias) + 1:][:1].isdigit()


def _matches(alias: list[str], name: list[str]) -> bool:
    span = len(alias)
    return any(all(_token_match(a, t) for a, t in zip(alias, name[i:i + span], strict=True))
               for i in range(len(name) - span + 1))


@lru_cache(maxsize=1)
def _aliases() -> tuple[tuple[str, tuple[str, ...]], ...]:
    with ALIASES.open(newline="") as fh:
        return tuple((row["family"], tuple(row["alias"].split())) for row in csv.DictReader(fh))


def family_of(name: str | None) -> str | None:
    """The family a name belongs to by the alias table, or None."""
    if not name:
        return None
    name_tokens = tokens(name)
    return next((family for family, alias in _aliases() if _matches(list(alias), name_tokens)), None)


def model_matches(pattern: str, model: str) -> bool:
    """A family-facts `model_match` regex, anchored at token boundaries (`360m` does not match `1360m`)."""
    return re.search(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])", model.lower()) is not None


@dataclass(frozen=True)
class Identity:
    family: str
    evidence: str  # where the family was read, e.g. "GGUF general.basename 'smollm2'"
    name: str  # the name whose size decides between a family's models


def identify(named: list[tuple[str, str | None]], vocab: int | None = None) -> Identity | None:
    """The first (source, name) pair whose name the alias table knows; the tokenizer's vocabulary as a fallback.

    `named` is ordered by trust: the file's own metadata, config.json's `_name_or_path`, the tokenizer's
    `name_or_path`, then the folder or file name. The size name returned is the first that carries a size.
    """
    sized = next((n for _, n in named if n and any(_SIZE.match(t) for t in tokens(n))), None)
    for source, name in named:
        family = family_of(name)
        if family is not None:
            return Identity(family, f"{source} '{name}'", sized or name or "")
    family = TOKENIZER_VOCAB.get(vocab or -1)
    if family is not None:
        return Identity(family, f"tokenizer vocabulary of {vocab} (only {family} uses it)", sized or "")
    return None
