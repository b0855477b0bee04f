"""Modifications: every kind is declared once (`doctor.modifications.kinds`, or a plugin) in the registry,
which applies it. Implementations record each change in the undo log (`doctor.modifications.base`)."""

from __future__ import annotations

from doctor.modifications.registry import apply_modification

__all__ = ["apply_modification"]
