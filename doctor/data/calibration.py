"""Calibration data for layer-wise methods: built once per spec and shared by every checkup that asks."""

from __future__ import annotations

from doctor.architectures.vocab import check_token_ids
from doctor.data.texts import calibration_windows, resolve_corpus, text_info, tokenize
from doctor.modifications.base import Calibration
from doctor.spec.modification import CalibrationSpec


class CalibrationProvider:
    """`provider(spec_or_None) -> Calibration`, cached by the spec's values."""

    def __init__(self, patient, default: CalibrationSpec, default_seq_len: int) -> None:
        self.patient = patient
        self.default = default
        self.default_seq_len = default_seq_len
        self._cache: dict[tuple, Calibration] = {}

    def __call__(self, spec: CalibrationSpec | None = None) -> Calibration:
        spec = spec or self.default
        seq_len = min(spec.seq_len or self.default_seq_len, self.default_seq_len)
        key = (spec.corpus, spec.samples, seq_len, spec.seed)
        if key not in self._cache:
            text = resolve_corpus(spec.corpus, demo=self.patient.is_demo, purpose="calibration")
            ids = tokenize(text, self.patient.tokenizer)
            windows = calibration_windows(ids, spec.samples, seq_len, spec.seed)
            check_token_ids(windows, self.patient.model, self.patient.tokenizer, f"calibration text {text.name}")
            self._cache[key] = Calibration(windows=windows, info=text_info(text, windows, spec.seed))
        return self._cache[key]
