"""Architecture adapters: one per family layout, looked up from a decoder block's structure.

Built-in adapters are tried most specific first; third-party packages add adapters through the entry-point
group `model_doctor.architectures` (each entry point names an `Architecture` subclass or instance), tried before
the built-ins. A block no adapter recognises gets the generic adapter: every linear is a target of weight
modifications, and everything that needs layout knowledge (AWQ scaling, heads, channels, identity expansion)
is "unsupported".
"""

from __future__ import annotations

import logging
from functools import cache

from torch import nn

from doctor.architectures.base import Architecture, Attention, Mlp, ScaleGroup, Unsupported
from doctor.architectures.falcon import Falcon
from doctor.architectures.gpt2 import Gpt2
from doctor.architectures.hybrid import Hybrid
from doctor.architectures.llama import LlamaLike
from doctor.architectures.mamba import Mamba
from doctor.architectures.moe import MixtureOfExperts
from doctor.architectures.neox import GptNeox
from doctor.architectures.opt import Opt
from doctor.architectures.phi3 import Phi3
from doctor.plugins import installed

__all__ = [
    "Architecture", "Attention", "Mlp", "ScaleGroup", "Unsupported", "BUILTIN", "GENERIC", "architecture_of",
    "registered",
]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "model_doctor.architectures"
BUILTIN: tuple[Architecture, ...] = (
    Hybrid(), MixtureOfExperts(), LlamaLike(), Phi3(), Gpt2(), Opt(), GptNeox(), Falcon(), Mamba(),
)
GENERIC = Architecture()


@cache
def plugins() -> tuple[Architecture, ...]:
    """Adapters from installed packages (loaded once); a broken plugin is logged and skipped."""
    found = [target() if isinstance(target, type) else target for _, target in installed(ENTRY_POINT_GROUP)]
    return tuple(a for a in found if isinstance(a, Architecture))


def registered() -> tuple[Architecture, ...]:
    """Every adapter in lookup order: plugins, then built-ins."""
    return plugins() + BUILTIN


def architecture_of(block: nn.Module) -> Architecture:
    """The adapter for a decoder block (the generic one if none recognises it)."""
    return next((a for a in registered() if a.matches(block)), GENERIC)
