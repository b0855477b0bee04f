"""Calibration data for layer-wise methods: built once per spec and shared by every checkup that asks."""

from __future__ import annotations

from doctor.architectures.vocab import check_token_ids
from doctor.data.texts import calibration_windows, resolve_corpus, text_info, tokenize
from doctor.modifications.base import Calibration
from doctor.spec.base import LITERATURE_MAX_SEQ_LEN, LITERATURE_SAMPLES, CalibrationSpec


class CalibrationProvider:
    """`provider(spec_or_None) -> Calibration`, cached by the spec's values."""

    def __init__(self, patient, default: CalibrationSpec, default_seq_len: int) -> None:
        self.patient = patient
        self.default = default
        self.default_seq_len = default_seq_len
        self._cache: dict[tuple, Calibration] = {}

    def __call__(self, spec: CalibrationSpec | None = None) -> Calibration:
        spec = spec or self.default
        if spec.preset == "literature":
            samples, sampler = LITERATURE_SAMPLES, "reference"
            seq_len = min(self.patient.facts.context or LITERATURE_MAX_SEQ_LEN, LITERATURE_MAX_SEQ_LEN)
        else:
            samples, sampler = spec.samples, "torch"
            seq_len = min(spec.seq_len or self.default_seq_len, self.default_seq_len)
        key = (spec.corpus, samples, seq_len, spec.seed, sampler)
        if key not in self._cache:
            text = resolve_corpus(spec.corpus, demo=self.patient.is_demo, purpose="calibration")
            ids = tokenize(text, self.patient.tokenizer)
            windows = calibration_windows(ids, samples, seq_len, spec.seed, sampler)
            check_token_ids(windows, self.patient.model, self.patient.tokenizer, f"calibration text {text.name}")
            self._cache[key] = Calibration(windows=windows, info=text_info(text, windows, spec.seed, spec.preset))
        return self._cache[key]
