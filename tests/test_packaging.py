"""The built wheel carries everything an installed `doctor examine` needs: built-in suites, rules,
predictors, the demo model, texts, tasks and templates (an editable install would hide a gap here)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_built_in_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("model_doctor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"doctor/builtin/checkups/{p.name}" for p in (ROOT / "checkups").glob("*.yaml")}
    expected |= {f"doctor/builtin/rules/{p.name}" for p in (ROOT / "rules").glob("*.yaml")}
    expected |= {f"doctor/builtin/predictors/{p.name}" for p in (ROOT / "predictors").glob("*.json")}
    expected |= {
        "doctor/assets/models/stories260k/model.safetensors",
        "doctor/assets/models/stories260k/tokenizer.json",
        "doctor/assets/data/tinystories/valid-excerpt.txt",
        "doctor/assets/data/wikitext-2/wiki.test.raw",
        "doctor/report/templates/report.html.j2",
    }
    expected |= {f"doctor/tasks/data/{p.name}" for p in (ROOT / "doctor" / "tasks" / "data").glob("*.jsonl")}
    assert not expected - names, sorted(expected - names)
    assert not [n for n in names if n.endswith((".bin", ".pkl", ".pt"))]


def test_every_code_folder_is_a_package():
    """find_packages skips a folder without __init__.py, and an installed doctor then fails to import."""
    missing = [
        str(d.relative_to(ROOT)) for d in (ROOT / "doctor").rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()
    ]
    assert not missing
