"""Diagnosis: declarative rules over an examination's observations, producing findings with evidence."""

from __future__ import annotations

from doctor.diagnose.engine import diagnose, evaluate_rule
from doctor.diagnose.loading import LoadedRule, load_rule_file, load_rules, parse_rule
from doctor.diagnose.rule import Rule

__all__ = ["LoadedRule", "Rule", "diagnose", "evaluate_rule", "load_rule_file", "load_rules", "parse_rule"]
