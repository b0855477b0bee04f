"""The training table: published compression results plus the tool's own observations, cleaned for fitting.

Conventions follow predictors/data/literature-README.md: the target compares `value` with `baseline_value`
within a row only, `fp16` reference rows are dropped, combined compression rows (a pruning method plus a
quantizer) are kept out of the single-modification fit, and GGUF/codebook rows keep their own method class
because their nominal bits understate the real bits per weight.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from doctor.errors import DataError
from doctor.predict.families import family_of, model_matches
from doctor.resources import PREDICTORS_DIR

log = logging.getLogger(__name__)

FAMILY_FACTS = PREDICTORS_DIR / "data" / "family_facts.csv"
VOCAB_SIZES = PREDICTORS_DIR / "data" / "vocab_sizes.csv"
COLUMNS = [
    "source", "source_ref", "model_family", "model", "params_b", "n_layers", "hidden_size", "method", "kind", "bits",
    "group_size", "sparsity", "pattern", "calibration", "metric", "value", "baseline_value", "notes",
]
PPL_METRICS = ("wikitext2_ppl", "c4_ppl", "ptb_ppl", "wikitext2_ppl_ratio")
# SLEB rows in the zlab collection give no dense value in their own table, but their note quotes the dense
# WikiText-2 perplexity the same collection measured at the same context; those two are the only imputations.
_QUOTED_DENSE = {("zlab-pruning-collection", "LLaMA-2-7B", "wikitext2_ppl"): 5.47,
                 ("zlab-pruning-collection", "LLaMA-3.1-8B", "wikitext2_ppl"): 6.24}


@dataclass(frozen=True)
class FamilyFact:
    family: str
    training_tokens: float | None
    source: str


@lru_cache(maxsize=1)
def _family_rows() -> tuple[dict, ...]:
    with FAMILY_FACTS.open(newline="") as fh:
        return tuple(csv.DictReader(fh))


def family_fact(family: str | None, model: str | None = None) -> FamilyFact | None:
    """Training tokens for a family: its exact name, else the family the alias table finds in `family` or `model`
    (whole tokens: llama-30b is LLaMA, not LLaMA-3); a row's `model_match` picks the size when `model` has one."""
    rows = _family_rows()
    known = {r["family"].lower(): r["family"] for r in rows}
    name = known.get(family.lower()) if family else None
    name = name or family_of(family) or family_of(model)
    candidates = [r for r in rows if r["family"] == name]
    if not candidates:
        return None
    chosen = next((r for r in candidates if r["model_match"] and model and model_matches(r["model_match"], model)),
                  None) or next((r for r in candidates if not r["model_match"]), candidates[0])
    tokens = float(chosen["training_tokens"]) if chosen["training_tokens"] else None
    return FamilyFact(family=chosen["family"], training_tokens=tokens, source=chosen["source"])


@lru_cache(maxsize=1)
def _vocab_sizes() -> dict[str, float]:
    with VOCAB_SIZES.open(newline="") as fh:
        return {r["model_family"].lower(): float(r["vocab"]) for r in csv.DictReader(fh)}


def vocab_of(family: object) -> float:
    """The family's vocabulary size (vocab_sizes.csv, from the models' configs); NaN when not listed."""
    return _vocab_sizes().get(str(family).lower(), math.nan)


def _dense_ppl(frame: pd.DataFrame) -> pd.Series:
    """The dense perplexity behind each row's cap: its baseline, or for ratio rows (baseline 1) the median
    dense WikiText-2 perplexity the table gives for the same model (else for the whole table)."""
    dense = frame.baseline_value.astype(float).copy()
    ratio = frame.metric == "wikitext2_ppl_ratio"
    wiki = frame[frame.metric == "wikitext2_ppl"]
    per_model = wiki.groupby("model").baseline_value.median().to_dict()
    overall = float(wiki.baseline_value.median()) if len(wiki) else math.nan
    dense[ratio] = [per_model.get(m, overall) for m in frame.model[ratio]]
    return dense


def read_rows(path: Path) -> pd.DataFrame:
    """One table in the literature.csv layout; a missing column is a one-line DataError."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read training table: {exc}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: training table lacks column(s) {', '.join(missing)}")
    return frame[COLUMNS]


def context_of(notes: object) -> float:
    """The evaluation context from a `ctx=N;` note, NaN when unknown."""
    match = re.search(r"ctx=(\d+)", notes) if isinstance(notes, str) else None
    return float(match.group(1)) if match else math.nan


def act_bits_of(notes: object) -> float:
    """Activation bits from a `W?A?` note (weight+activation quantization), 16 when absent."""
    match = re.search(r"\bW\d+A(\d+)\b", notes) if isinstance(notes, str) else None
    return float(match.group(1)) if match else 16.0


def is_combined(row: dict) -> bool:
    """A pruning method stacked with a quantizer (both sparsity and bits set)."""
    bits = row["bits"]
    return "+" in str(row["method"]) and row["kind"] != "quantization" and bits == bits and bits is not None


def _fill_quoted_dense(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["baseline_imputed"] = False
    for (source, model, metric), dense in _QUOTED_DENSE.items():
        sel = ((frame.source == source) & (frame.model == model) & (frame.metric == metric)
               & frame.baseline_value.isna() & (frame.kind == "layer-removal"))
        frame.loc[sel, "baseline_value"] = dense
        frame.loc[sel, "baseline_imputed"] = True
    return frame


_NUMERIC = ("params_b", "n_layers", "hidden_size", "bits", "group_size", "sparsity", "value", "baseline_value")


def unusable_reason(row: dict) -> str | None:
    """Why a row (numeric columns already coerced) cannot be a degradation training or test row; None if it can."""
    metric = str(row["metric"])
    if str(row["method"]) == "fp16":
        return "dense reference row (method fp16)"
    if not (metric in PPL_METRICS or metric.endswith("_ppl")):
        return f"metric '{metric}' is not a perplexity"
    if not row["value"] > 0:
        return "value is missing, not a number or not positive"
    if not row["baseline_value"] > 0:
        return "no dense value in the row (baseline_value missing, not a number or not positive)"
    if is_combined(row):
        return "combined compression (pruning plus a quantizer) is not a single modification"
    if act_bits_of(row["notes"]) < 16:
        return "weight+activation quantization (W?A? in notes); the tool quantizes weights only"
    return None


def degradation_rows_with_reasons(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, list[dict]]:
    """Compressed perplexity rows with a within-row baseline and the target `delta` = log(value / baseline),
    and every other row with the reason it was left out (`row` is the 0-based data row)."""
    frame = _fill_quoted_dense(pd.concat(frames, ignore_index=True))
    for column in _NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    reasons = [unusable_reason(r) for r in frame.to_dict("records")]
    dropped = [{"row": int(i), "source": str(r["source"]), "model": str(r["model"]), "method": str(r["method"]),
                "reason": why} for i, (r, why) in enumerate(zip(frame.to_dict("records"), reasons, strict=True)) if why]
    frame = frame[[why is None for why in reasons]].copy()
    frame["act_bits"] = frame.notes.map(act_bits_of)
    frame["delta"] = np.log(frame.value / frame.baseline_value)
    frame["ctx"] = frame.notes.map(context_of)
    facts = [family_fact(f, m) for f, m in zip(frame.model_family, frame.model, strict=True)]
    frame["training_tokens"] = [f.training_tokens if f and f.training_tokens else math.nan for f in facts]
    frame["vocab"] = frame.model_family.map(vocab_of)
    frame["dense_ppl"] = _dense_ppl(frame)
    return frame, dropped


def degradation_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The usable rows of degradation_rows_with_reasons, renumbered."""
    return degradation_rows_with_reasons(frames)[0].reset_index(drop=True)


def baseline_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Unique dense perplexities (one per source, model, metric and context) for the health model."""
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame.metric.isin(PPL_METRICS[:3]) & frame.baseline_value.notna() & (frame.baseline_value > 0)]
    frame = frame.assign(ctx=frame.notes.map(context_of), dense=frame.baseline_value)
    frame = frame.drop_duplicates(subset=["source", "model", "metric", "ctx", "dense"])
    facts = [family_fact(f, m) for f, m in zip(frame.model_family, frame.model, strict=True)]
    frame["training_tokens"] = [f.training_tokens if f and f.training_tokens else math.nan for f in facts]
    return frame.reset_index(drop=True)
