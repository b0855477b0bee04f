"""Broken model folders through `doctor examine`: one line naming the file and what to do, exit 2.

Copies of the bundled demo model are damaged the way downloads and copies go wrong. transformers is imported
up front so the time bound measures the checks, not the library import.
"""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401  (the time bound excludes imports)

from doctor.resources import DEMO_MODEL
from tests.e2e.test_hostile_input import refused


@pytest.fixture
def demo_copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, folder)
    return folder


@pytest.mark.parametrize("keep", [0, 5, 100, -1000])
def test_truncated_safetensors_is_one_line_naming_the_file(demo_copy, tmp_path, keep):
    weights = demo_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    refused(["examine", str(demo_copy), "--out", str(tmp_path / "out")], str(weights), "download it again")


def test_corrupt_safetensors_header_is_one_line(demo_copy, tmp_path):
    weights = demo_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # the JSON header is no longer JSON
    weights.write_bytes(bytes(data))
    refused(["examine", str(demo_copy), "--out", str(tmp_path / "out")], str(weights), "header")


def test_folder_without_tokenizer_says_so(demo_copy, tmp_path):
    (demo_copy / "tokenizer.json").unlink()
    refused(["examine", str(demo_copy), "--out", str(tmp_path / "out")], f"no tokenizer in {demo_copy}")


def test_nan_weights_blame_the_unmodified_model(demo_copy, tmp_path):
    weights = demo_copy / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[3]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, weights)
    line = refused(["examine", str(demo_copy), "--out", str(tmp_path / "out")], "unmodified model", name)
    assert not (tmp_path / "out" / "results.jsonl").exists()
    assert "NaN or infinite" in line


def test_remote_code_refusal_names_the_flag(demo_copy, tmp_path):
    config = json.loads((demo_copy / "config.json").read_text())
    config.update(model_type="custom-arch", auto_map={"AutoConfig": "configuration_x.XConfig",
                                                      "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    (demo_copy / "config.json").write_text(json.dumps(config))
    refused(["examine", str(demo_copy), "--out", str(tmp_path / "out")], str(demo_copy), "--trust-remote-code")
