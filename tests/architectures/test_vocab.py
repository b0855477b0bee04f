"""A tokenizer larger than the embedding: the ids used are checked, and one past the embedding is refused with
both sizes named instead of an IndexError inside the forward pass."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.architectures.vocab import check_token_ids
from doctor.errors import DataError
from doctor.examination.runner import Options, examine
from doctor.patient import Patient, extract_facts
from doctor.spec.checkup import Suite
from tests.conftest import ToyTokenizer


class WideTokenizer(ToyTokenizer):
    """129 tokens for a 128-row embedding: the letter 'e' maps to the extra id 128."""

    def __len__(self) -> int:
        return 129

    def __call__(self, text, return_tensors=None, **kwargs):
        out = super().__call__(text, return_tensors=return_tensors, **kwargs)
        ids = out["input_ids"]
        z = 3 + ord("e") % 125
        out["input_ids"] = torch.where(ids == z, 128, ids) if return_tensors == "pt" else [
            128 if i == z else i for i in ids]
        return out


def test_ids_inside_the_embedding_pass_and_outside_are_refused():
    model = tiny_model("qwen2")
    check_token_ids(torch.tensor([[0, 5, 127]]), model, WideTokenizer(), "text")
    with pytest.raises(DataError, match=r"text: the tokenizer produced token id 128, outside the model's "
                                        r"embedding of 128 rows \(tokenizer vocabulary: 129 tokens\)"):
        check_token_ids(torch.tensor([[0, 128]]), model, WideTokenizer(), "text")


def test_an_examination_with_a_too_large_tokenizer_stops_with_one_line(tmp_path):
    model = tiny_model("qwen2")
    patient = Patient(model=model, tokenizer=WideTokenizer(), facts=extract_facts(model, "wide"), source="wide")
    suite = Suite.model_validate({"name": "s", "eval": {"corpus": "auto", "max_windows": 1, "seq_len": 32},
                                  "checkups": [{"id": "rtn", "modification": {"kind": "quantize", "bits": 4}}]})
    with pytest.raises(DataError, match="evaluation text .*token id 128.*128 rows.*129 tokens"):
        examine(patient, suite, Options(out_dir=tmp_path, use_predictor=False))
