"""`doctor predictor add RESULTS.json`: an examination's checkups as training rows (literature.csv layout).

Each ok, single-step checkup the predictor can featurize becomes one row with the realized modification and
the patient's facts, and the dense perplexity one `fp16` reference row, so refits learn from the tool's own
measurements (and the baseline-health model from its dense perplexities).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

from doctor.errors import DataError
from doctor.predict.cases import Unsupported, cases_for, patient_basics
from doctor.predict.health import corpus_metric
from doctor.predict.table import COLUMNS
from doctor.results import Examination

SOURCE = "model-doctor"


def _metric(corpus: str) -> str:
    return corpus_metric(corpus) or re.sub(r"[^a-z0-9]+", "", corpus.lower().split("/")[-1].split(".")[0]) + "_ppl"


def _row(exam: Examination, ref: str, metric: str, notes: str, **fields: object) -> dict:
    facts = exam.patient
    basics = patient_basics(facts)
    row = dict.fromkeys(COLUMNS, "")
    row.update(source=SOURCE, source_ref=ref, model_family=basics["family"] or facts.id, model=facts.id,
               params_b=facts.params / 1e9, n_layers=facts.layers, hidden_size=facts.hidden, metric=metric,
               notes=notes)
    row.update({k: "" if v is None else v for k, v in fields.items()})
    return row


def rows_from_exam(exam: Examination, ref: str) -> list[dict]:
    """Training rows for one examination (empty when it has no dense perplexity)."""
    ppl = exam.baseline.metrics.get("ppl")
    text = exam.baseline.text
    if ppl is None or not ppl.value > 0:
        return []
    metric = _metric(text.corpus)
    notes = f"ctx={text.seq_len}; corpus={text.corpus}; {text.windows} windows; examined {exam.started}"
    rows = [_row(exam, ref, metric, "uncompressed reference row; " + notes, method="fp16", kind="quantization",
                 bits=16, value=ppl.value, baseline_value=ppl.value)]
    for checkup in exam.checkups:
        ratio = checkup.value("ppl_ratio")
        if checkup.status != "ok" or ratio is None or not ratio > 0:
            continue
        try:
            cases = cases_for(exam.patient, checkup.modification, checkup.realized, text.corpus, text.seq_len)
        except (Unsupported, KeyError, TypeError, ValueError):
            continue
        if len(cases) != 1:
            continue  # combined modifications stay out of the single-modification fit
        case, mod = cases[0], checkup.modification
        pattern = f"{mod['n']}:{mod['m']}" if mod.get("structure") == "nm" else None
        calib = checkup.calibration.corpus if checkup.calibration else None
        rows.append(_row(exam, ref, metric, f"checkup {checkup.id}; " + notes, method=mod.get("method", mod["kind"]),
                         kind=case.kind, bits=case.bits, group_size=case.group_size, sparsity=case.sparsity,
                         pattern=pattern, calibration=calib, value=ppl.value * ratio, baseline_value=ppl.value))
    return rows


def add_results(results: Path, table: Path) -> int:
    """Append one results.json's rows to `table` (created with a header); returns rows added, 0 if present."""
    results = Path(results)
    try:
        raw = results.read_bytes()
        exam = Examination.model_validate_json(raw)
    except OSError as exc:
        raise DataError(f"{results}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DataError(f"{results}: not a model-doctor results.json: {str(exc).splitlines()[0]}") from None
    ref = f"results.json sha256 {hashlib.sha256(raw).hexdigest()}"
    table = Path(table)
    if table.is_file() and ref in table.read_text(encoding="utf-8"):
        return 0
    rows = rows_from_exam(exam, ref)
    new = not table.is_file()
    table.parent.mkdir(parents=True, exist_ok=True)
    with table.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return len(rows)
