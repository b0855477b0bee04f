"""Every modification kind on a tiny model of every architecture family, as one examination per family.

Run as a script (`PYTHONPATH=. python tests/architectures/arch_matrix.py`) it rewrites the architecture matrix
in README.md from these results; tests/architectures/test_matrix.py runs the same cells and checks that the
README says what they produced.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from arch_zoo import CONFIGS, tiny_model

from tests.conftest import as_patient

# (column title, modification spec)
KINDS: list[tuple[str, dict]] = [
    ("RTN 4", {"kind": "quantize", "method": "rtn", "bits": 4, "group_size": 32}),
    ("RTN 4 + SSM params", {"kind": "quantize", "method": "rtn", "bits": 4, "group_size": 32,
                            "ssm_params": "quantize"}),
    ("GPTQ 4", {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32}),
    ("AWQ 4", {"kind": "quantize", "method": "awq", "bits": 4, "group_size": 32}),
    ("magnitude 50%", {"kind": "prune", "method": "magnitude", "sparsity": 0.5}),
    ("Wanda 50%", {"kind": "prune", "method": "wanda", "sparsity": 0.5}),
    ("SparseGPT 2:4", {"kind": "prune", "method": "sparsegpt", "structure": "nm", "n": 2, "m": 4}),
    ("heads 25%", {"kind": "prune", "method": "wanda", "structure": "heads", "sparsity": 0.25}),
    ("channels 30%", {"kind": "prune", "method": "wanda", "structure": "channels", "sparsity": 0.3}),
    ("experts -1 (routing)", {"kind": "prune_experts", "count": 1}),
    ("experts merge -1", {"kind": "merge_experts", "count": 1}),
    ("remove 1 (BI)", {"kind": "remove_layers", "count": 1}),
    ("expand 1 (identity)", {"kind": "expand_layers", "count": 1, "init": "identity"}),
    ("greedy decoding", {"kind": "decode", "strategy": "greedy"}),
    ("ONNX fp32", {"kind": "onnx"}),
]
WEIGHT_KINDS = {"quantize", "prune", "merge_experts"}  # kinds that report coverage of their targets
SAME_FUNCTION_KINDS = {"expand_layers", "decode", "onnx"}  # identity init, decoding and an fp32 export keep it
# The ONNX column exports each family (seconds each): CI runs it on these, the script and `-m slow` on all.
ONNX_IN_CI = {"gpt2", "mixtral", "mamba", "jamba", "bamba"}
README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- architecture-matrix:start -->", "<!-- architecture-matrix:end -->"


@dataclass
class Cell:
    status: str  # 'ok' or 'error'
    error: str | None
    coverage: float | None
    ppl_ratio: float | None

    @property
    def text(self) -> str:
        if self.status == "ok":
            return "yes"
        return "unsupported" if (self.error or "").startswith("unsupported:") else "ERROR"


def columns(onnx: bool = True) -> list[tuple[str, dict]]:
    return [(title, spec) for title, spec in KINDS if onnx or spec["kind"] != "onnx"]


def suite(kinds: list[tuple[str, dict]]):
    from doctor.spec.checkup import Suite

    return Suite.model_validate({
        "name": "architecture-matrix",
        "eval": {"corpus": "auto", "max_windows": 2, "bootstrap": 0, "seq_len": 64},
        "calibration": {"corpus": "auto", "samples": 4, "seq_len": 64},
        "checkups": [{"id": f"c{i}", "modification": spec, "metrics": ["perplexity"]}
                     for i, (_title, spec) in enumerate(kinds)],
    })


def run_arch(arch: str, out_dir: Path, model=None, kinds: list[tuple[str, dict]] | None = None):
    """Examine a tiny `arch` model with `kinds` (default: every column); returns (cells by column title, the
    examined model)."""
    from doctor.examination.runner import Options, examine

    kinds = KINDS if kinds is None else kinds
    model = model if model is not None else tiny_model(arch)
    exam = examine(as_patient(model, arch), suite(kinds), Options(out_dir=out_dir, use_predictor=False))
    cells = {}
    for (title, _spec), c in zip(kinds, exam.checkups, strict=True):
        ratio = c.metrics["ppl_ratio"].value if "ppl_ratio" in c.metrics else None
        cells[title] = Cell(c.status, c.error, c.realized.get("coverage"), ratio)
    return cells, model


def row(arch: str, cells: dict[str, Cell]) -> str:
    return "| " + " | ".join([arch, *(cells[title].text for title, _ in KINDS)]) + " |"


def readme_cells(block: str, arch: str) -> dict[str, str]:
    """The README matrix's cells of one architecture, by column title."""
    for line in block.splitlines():
        values = [v.strip() for v in line.strip().strip("|").split("|")]
        if values and values[0] == arch:
            return dict(zip((title for title, _ in KINDS), values[1:], strict=False))
    return {}


def reasons(arch: str, cells: dict[str, Cell]) -> list[str]:
    return [f"- {arch}, {title}: {c.error}" for title, c in cells.items() if c.status != "ok"]


def render(results: dict[str, dict[str, Cell]]) -> str:
    header = "| architecture | " + " | ".join(title for title, _ in KINDS) + " |"
    rule = "|" + "---|" * (len(KINDS) + 1)
    lines = [header, rule, *(row(a, cells) for a, cells in results.items()), ""]
    lines += [r for a, cells in results.items() for r in reasons(a, cells)]
    return "\n".join(lines).rstrip() + "\n"


def readme_block(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    return match.group(1) if match else ""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {arch: run_arch(arch, Path(tmp) / arch)[0] for arch in CONFIGS}
    text = README.read_text()
    block = render(results)
    if START not in text:
        raise SystemExit(f"{README}: no {START} marker")
    README.write_text(text.replace(f"{START}\n{readme_block(text)}{END}", f"{START}\n{block}{END}"))
    print(block)  # noqa: T201


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
