"""The architecture matrix: every modification kind on every architecture family either works with full
coverage of its targets or is one recorded "unsupported: reason" checkup; the model is restored bit for bit;
README.md shows exactly these results."""

from __future__ import annotations

import pytest
import torch
from arch_matrix import (
    KINDS,
    ONNX_IN_CI,
    README,
    SAME_FUNCTION_KINDS,
    WEIGHT_KINDS,
    columns,
    readme_block,
    readme_cells,
    reasons,
    run_arch,
)
from arch_zoo import CONFIGS

# These cells are unsupported by design (there is nothing of that kind to remove); every other cell must work.
UNSUPPORTED = {
    ("mamba", "heads 25%"), ("mamba", "channels 30%"),
    ("falcon", "heads 25%"),  # multi-query attention: one KV group, so no KV group can be removed
    # Jamba's config derives layer types from a period and an offset, which cannot describe the new order
    ("jamba", "remove 1 (BI)"), ("jamba", "expand 1 (identity)"),
    # expert pruning and merging need a mixture of experts
    *((arch, title) for arch in CONFIGS if arch not in ("mixtral", "qwen2_moe", "jamba")
      for title in ("experts -1 (routing)", "experts merge -1")),
    # only Mamba layers have state-space parameters to round
    *((arch, "RTN 4 + SSM params") for arch in CONFIGS if arch not in ("mamba", "jamba", "bamba")),
    # the exporter unrolls or specialises a Mamba scan to the traced sequence length: decided up front
    ("mamba", "ONNX fp32"), ("jamba", "ONNX fp32"), ("bamba", "ONNX fp32"),
}


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_every_kind_works_or_is_unsupported(arch, tmp_path):
    check_cells(arch, tmp_path, columns(onnx=arch in ONNX_IN_CI))


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(set(CONFIGS) - ONNX_IN_CI))
def test_onnx_column_everywhere(arch, tmp_path):
    check_cells(arch, tmp_path, [(title, spec) for title, spec in KINDS if spec["kind"] == "onnx"])


def check_cells(arch, tmp_path, kinds):
    from doctor.architectures import architecture_of
    from doctor.compress.adapters import decoder_layers

    cells, model = None, None
    from arch_zoo import tiny_model

    model = tiny_model(arch)
    assert architecture_of(decoder_layers(model)[0]).name != "generic"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    cells, model = run_arch(arch, tmp_path, model, kinds)
    for title, spec in kinds:
        cell = cells[title]
        if (arch, title) in UNSUPPORTED:
            assert cell.status == "error" and cell.error.startswith("unsupported: "), cell.error
            continue
        assert cell.status == "ok", f"{arch} {title}: {cell.error}"
        if spec["kind"] in WEIGHT_KINDS:
            assert cell.coverage == 1.0, f"{arch} {title}: coverage {cell.coverage}"
        if spec["kind"] in SAME_FUNCTION_KINDS:
            assert cell.ppl_ratio == pytest.approx(1.0, abs=1e-4), f"{arch} {title}: {cell.ppl_ratio}"
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.config.to_dict() == config
    block = readme_block(README.read_text())
    written = readme_cells(block, arch)
    assert {t: written.get(t) for t in cells} == {t: c.text for t, c in cells.items()}, \
        "README matrix is stale: run tests/architectures/arch_matrix.py"
    assert all(r in block.splitlines() for r in reasons(arch, cells))
