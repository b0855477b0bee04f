"""Ready-made artifacts judged against their original: GGUF quants written with the gguf package, GPTQ and AWQ
packed checkpoints made from the doctor's own in-memory results, and the CLI shortcut that ranks them."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from doctor.artifacts.candidate import detect_format, load_candidate
from doctor.cli import main
from doctor.errors import ModelLoadError
from doctor.examination.runner import Options, examine
from doctor.modifications.kinds.quantize import QuantizeSpec
from doctor.resources import DEMO_CANDIDATE
from doctor.spec.checkup import Suite
from tests.artifacts.checkpoint_writers import write_packed
from tests.artifacts.gguf_writers import write_llama_gguf
from tests.artifacts.make_demo_candidate import CALIBRATION, quantize_demo
from tests.conftest import assert_bit_identical, state_snapshot

pytest.importorskip("gguf", reason="GGUF candidates need the gguf package (the gguf extra)")

EVAL = {"corpus": "auto", "max_windows": 4, "bootstrap": 0}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, demo_patient):
    folder = tmp_path_factory.mktemp("ggufs")
    p = demo_patient
    return {q: write_llama_gguf(p.model, p.tokenizer, folder / f"demo-{q.lower()}.gguf", q) for q in ("Q8_0", "Q4_0", "Q4_1")}


def test_gguf_candidates_read_back_within_their_block_grid(ggufs, demo_patient):
    model = demo_patient.model
    steps = {"Q8_0": 1 / 127, "Q4_0": 1 / 7, "Q4_1": 1 / 15}
    for qtype, path in ggufs.items():
        candidate = load_candidate(path, "auto", demo_patient)
        assert candidate.format == "gguf" and candidate.facts["tensor_types"][qtype] > 0.75
        for name, param in model.named_parameters():
            error = (candidate.weights[name] - param.detach()).abs().max()
            assert error <= steps[qtype] * param.detach().abs().max() + 1e-6, (qtype, name)


def test_gptq_round_trip_matches_the_in_memory_checkup(demo_patient, tmp_path):
    """The doctor's GPTQ, packed into AutoGPTQ's layout and read back as a candidate, measures as the in-memory
    checkup does (up to the float16 scales of the format)."""
    original = state_snapshot(demo_patient.model)
    undo = quantize_demo(demo_patient)
    folder = write_packed(demo_patient, original, tmp_path / "gptq-w4", "gptq", 4, 32)
    undo.restore()
    gptq = QuantizeSpec(method="gptq", bits=4, group_size=32, static_groups=True, calibration=CALIBRATION)
    suite = Suite.model_validate({"name": "round-trip", "eval": EVAL, "checkups": [
        {"id": "in-memory", "modification": {"kind": "quantize", **gptq.model_dump(exclude_unset=True)}, "metrics": ["perplexity", "kl"]},
        {"id": "packed", "modification": {"kind": "artifact", "path": str(folder)}, "metrics": ["perplexity", "kl"]},
    ]})
    exam = examine(demo_patient, suite, Options(out_dir=tmp_path / "out", use_predictor=False))
    in_memory, packed = exam.checkups
    assert packed.status == "ok", packed.error
    assert packed.realized["format"] == "gptq" and packed.realized["bits"] == 4
    assert packed.metrics["ppl"].value == pytest.approx(in_memory.metrics["ppl"].value, rel=2e-4)
    assert packed.metrics["kl_mean"].value == pytest.approx(in_memory.metrics["kl_mean"].value, rel=0.02, abs=1e-4)
    assert_bit_identical(demo_patient.model, original)


def test_awq_layout_round_trip_of_rtn(demo_patient, tmp_path):
    """AWQ's GEMM layout holds an asymmetric 4-bit g32 grid: RTN packed into it measures as RTN in memory."""
    from doctor.compress.adapters import block_linears, decoder_layers
    from doctor.compress.quantizer import quantize_rtn

    original = state_snapshot(demo_patient.model)
    with torch.no_grad():
        for block in decoder_layers(demo_patient.model):
            for module in block_linears(block).values():
                module.weight.copy_(quantize_rtn(module.weight, 4, 32, False))
    folder = write_packed(demo_patient, original, tmp_path / "awq-w4", "awq", 4, 32)
    demo_patient.model.load_state_dict(original)
    assert detect_format(folder)[0] == "awq"
    suite = Suite.model_validate({"name": "awq", "eval": EVAL, "checkups": [
        {"id": "rtn", "modification": {"kind": "quantize", "bits": 4, "group_size": 32}, "metrics": ["perplexity"]},
        {"id": "awq-file", "modification": {"kind": "artifact", "path": str(folder)}, "metrics": ["perplexity"]},
    ]})
    exam = examine(demo_patient, suite, Options(out_dir=tmp_path / "out", use_predictor=False))
    rtn, packed = exam.checkups
    assert packed.status == "ok", packed.error
    assert packed.metrics["ppl"].value == pytest.approx(rtn.metrics["ppl"].value, rel=2e-4)


def test_examine_ranks_candidates_from_the_command_line(ggufs, tmp_path):
    out = tmp_path / "ranked"
    result = CliRunner().invoke(main, [
        "examine", "demo", "--candidate", str(ggufs["Q8_0"]), "--candidate", str(ggufs["Q4_0"]),
        "--candidate", str(DEMO_CANDIDATE), "--max-windows", "4", "--out", str(out),
    ])
    assert result.exit_code in (0, 1), result.output
    results = json.loads((out / "results.json").read_text())
    by_id = {c["id"]: c for c in results["checkups"]}
    assert set(by_id) == {"candidate-demo-q8_0", "candidate-demo-q4_0", "candidate-stories260k-gptq-w4g32"}
    for checkup in by_id.values():
        assert checkup["status"] == "ok", checkup["error"]
        realized = checkup["realized"]
        assert realized["coverage"] == 1.0 and realized["file_bytes"] > 0
        assert realized["effective_bits"] == pytest.approx(realized["file_bytes"] * 8 / realized["weights_replaced"])
        assert checkup["expected"], "an expectation for the candidate's bit width"
    q8, q4 = by_id["candidate-demo-q8_0"], by_id["candidate-demo-q4_0"]
    assert q8["realized"]["dominant_type"] == "Q8_0" and q8["realized"]["bits"] == 8
    assert q8["metrics"]["kl_mean"]["value"] < q4["metrics"]["kl_mean"]["value"]
    assert q8["metrics"]["size_mb"]["value"] > q4["metrics"]["size_mb"]["value"]
    report = (out / "report.md").read_text()
    assert "Candidates" in report


@pytest.mark.parametrize("make", ["missing", "pickle", "bitsandbytes", "two-ggufs"])
def test_unsupported_candidates_are_one_line_exit_2(tmp_path, make, ggufs):
    target = tmp_path / make
    if make == "pickle":
        target = tmp_path / "model.bin"
        target.write_bytes(b"\x80\x04")
    elif make == "bitsandbytes":
        target.mkdir()
        (target / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    elif make == "two-ggufs":
        target.mkdir()
        for name in ("a.gguf", "b.gguf"):
            (target / name).write_bytes(ggufs["Q8_0"].read_bytes())
    result = CliRunner().invoke(main, ["examine", "demo", "--candidate", str(target), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()
    assert len(message) == 1 and str(target) in message[0]
    if make in ("pickle", "bitsandbytes"):
        assert "supported:" in message[0] and "GGUF" in message[0]


def test_a_candidate_with_another_tokenizer_is_refused_naming_both_sizes(demo_patient, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = demo_patient.tokenizer
    other = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, bos_token="<s>", eos_token="</s>")
    other.add_tokens(["<extra>"])
    path = write_llama_gguf(demo_patient.model, other, tmp_path / "other.gguf", "Q8_0")
    with pytest.raises(ModelLoadError, match=r"513 vs 512 tokens"):
        load_candidate(path, "auto", demo_patient)
    result = CliRunner().invoke(main, ["examine", "demo", "--candidate", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "513 vs 512 tokens" in result.output


def test_compressed_tensors_checkpoint_is_decompressed_by_its_library(demo_patient, tmp_path):
    pytest.importorskip("compressed_tensors", reason="compressed-tensors checkpoints need the artifacts extra")
    from tests.artifacts.checkpoint_writers import write_compressed_tensors

    folder, expected = write_compressed_tensors(tmp_path / "ct-w4")
    assert detect_format(folder)[0] == "compressed-tensors"
    candidate = load_candidate(folder, "auto", demo_patient)
    for name, weight in expected.items():
        assert torch.allclose(candidate.weights[name], weight, atol=1e-6), name
    assert candidate.facts["quantization_config"]["format"] == "pack-quantized"
