"""A method's own calibration shape (AWQ: llm-awq's 512-token blocks) replaces only the defaults a spec leaves."""

from doctor.data.calibration import CalibrationProvider, MethodWindows, calibration_size
from doctor.modifications.awq import CALIBRATION as AWQ_WINDOWS
from doctor.spec.base import CalibrationSpec

AWQ = MethodWindows(seq_len=512, samples=8)


def test_defaults_without_a_method_are_the_suite_wide_ones():
    assert calibration_size(CalibrationSpec(), 2048, 8192) == (32, 2048)
    assert calibration_size(CalibrationSpec(preset="literature"), 2048, 8192) == (128, 2048)
    assert calibration_size(CalibrationSpec(preset="literature"), 1024, 1024) == (128, 1024)


def test_a_method_shape_fills_what_the_spec_leaves_unset():
    assert calibration_size(CalibrationSpec(), 2048, 8192, AWQ) == (8, 512)
    assert calibration_size(CalibrationSpec(samples=32), 2048, 8192, AWQ) == (32, 512)
    assert calibration_size(CalibrationSpec(seq_len=256), 2048, 8192, AWQ) == (8, 256)
    assert calibration_size(CalibrationSpec(), 128, 128, AWQ) == (8, 128)  # never longer than the eval window


def test_literature_preset_uses_the_method_block_length():
    assert calibration_size(CalibrationSpec(preset="literature"), 2048, 8192, AWQ) == (128, 512)
    assert calibration_size(CalibrationSpec(preset="literature"), 256, 256, AWQ) == (128, 256)


def test_awq_declares_llm_awq_blocks():
    assert AWQ_WINDOWS.seq_len == 512 and AWQ_WINDOWS.literature_samples == 128


def test_provider_draws_the_method_shape(demo_patient):
    provider = CalibrationProvider(demo_patient, CalibrationSpec(), default_seq_len=512)
    assert tuple(provider(None, method=AWQ_WINDOWS).windows.shape) == (AWQ_WINDOWS.samples, 512)
    assert tuple(provider(None).windows.shape) == (32, 512)


def test_eval_budget_in_tokens_is_the_same_at_any_window_length():
    from doctor.spec.checkup import EvalSpec

    assert EvalSpec(max_tokens=65536).window_cap(512) == 128
    assert EvalSpec(max_tokens=65536).window_cap(2048) == 32
    assert EvalSpec(max_tokens=65536, max_windows=16).window_cap(512) == 16
    assert EvalSpec(max_tokens=100).window_cap(2048) == 1  # never less than one window
    assert EvalSpec().window_cap(2048) is None
