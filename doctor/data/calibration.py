"""Calibration data for layer-wise methods: built once per spec and shared by every checkup that asks."""

from __future__ import annotations

from dataclasses import dataclass

from doctor.architectures.vocab import check_token_ids
from doctor.data.texts import calibration_windows, resolve_corpus, text_info, tokenize
from doctor.modifications.base import Calibration
from doctor.spec.base import LITERATURE_MAX_SEQ_LEN, LITERATURE_SAMPLES, CalibrationSpec


@dataclass(frozen=True)
class MethodWindows:
    """A method's own calibration shape, where its reference fixes one (AWQ: llm-awq's blocks of 512 tokens).

    It replaces the suite-wide defaults only: a `samples` or `seq_len` the spec sets explicitly still wins.
    """

    seq_len: int
    samples: int  # under preset 'fast'
    literature_samples: int = LITERATURE_SAMPLES


def calibration_size(spec: CalibrationSpec, default_seq_len: int, context: int | None,
                     method: MethodWindows | None = None) -> tuple[int, int]:
    """(samples, seq_len) of the windows a spec draws for a method; `default_seq_len` is the evaluation window."""
    if spec.preset == "literature":
        longest = method.seq_len if method is not None else LITERATURE_MAX_SEQ_LEN
        return (method.literature_samples if method is not None else LITERATURE_SAMPLES,
                min(context or longest, longest))
    own = method is not None
    samples = method.samples if own and "samples" not in spec.model_fields_set else spec.samples
    seq_len = spec.seq_len or (method.seq_len if own else default_seq_len)
    return samples, min(seq_len, default_seq_len)


class CalibrationProvider:
    """`provider(spec_or_None, method=None) -> Calibration`, cached by the windows it draws."""

    def __init__(self, patient, default: CalibrationSpec, default_seq_len: int) -> None:
        self.patient = patient
        self.default = default
        self.default_seq_len = default_seq_len
        self._cache: dict[tuple, Calibration] = {}

    def __call__(self, spec: CalibrationSpec | None = None, method: MethodWindows | None = None) -> Calibration:
        spec = spec or self.default
        samples, seq_len = calibration_size(spec, self.default_seq_len, self.patient.facts.context, method)
        sampler = "reference" if spec.preset == "literature" else "torch"
        key = (spec.corpus, samples, seq_len, spec.seed, sampler)
        if key not in self._cache:
            text = resolve_corpus(spec.corpus, demo=self.patient.is_demo, purpose="calibration")
            ids = tokenize(text, self.patient.tokenizer)
            windows = calibration_windows(ids, samples, seq_len, spec.seed, sampler)
            check_token_ids(windows, self.patient.model, self.patient.tokenizer, f"calibration text {text.name}")
            self._cache[key] = Calibration(windows=windows, info=text_info(text, windows, spec.seed, spec.preset))
        return self._cache[key]
