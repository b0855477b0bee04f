"""Third-party plugins: the guide's example package, installed into a temporary environment through the
entry points of its own pyproject.toml, adds a modification kind and a metric group without any change here;
an examination uses both end to end, and the registry's contract test covers the new kind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from doctor.modifications import registry
from doctor.plugins import installed

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "docs" / "examples" / "plugin"
GUIDE = ROOT / "docs" / "extending.md"


def install(site: Path, source: Path = PLUGIN / "doctor_noise.py") -> Path:
    """What `pip install` leaves behind: the module and a dist-info with the project's entry points."""
    site.mkdir(parents=True, exist_ok=True)
    (site / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist = site / f"doctor_noise-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in project["entry-points"].items()
    ))
    return site


def run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def doctor(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(site, "-c", "from doctor.cli import main; main()", *args, cwd=cwd)


def test_the_guide_shows_the_example_that_is_tested():
    guide = GUIDE.read_text(encoding="utf-8")
    for name in ("doctor_noise.py", "pyproject.toml", "noise-suite.yaml"):
        assert (PLUGIN / name).read_text(encoding="utf-8").strip() in guide, f"{name} differs from the guide"


def test_no_plugin_is_installed_in_this_environment():
    assert "noise" not in registry.kinds()
    assert installed("model_doctor.modifications") == []


def test_a_plugin_kind_and_metric_run_end_to_end(tmp_path):
    site = install(tmp_path / "site")
    schema = doctor(site, "schema", cwd=tmp_path)
    assert schema.returncode == 0, schema.stderr
    assert '"noise"' in schema.stdout and "NoiseSpec" in schema.stdout
    suite = tmp_path / "noise-suite.yaml"
    suite.write_text((PLUGIN / "noise-suite.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    exam = doctor(site, "examine", "--suite", str(suite), "--out", "out", cwd=tmp_path)
    assert exam.returncode in (0, 1), exam.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    checkups = {c["id"]: c for c in results["checkups"]}
    noise, chained = checkups["noise-5"], checkups["noise-5-then-rtn8"]
    assert noise["status"] == chained["status"] == "ok", (noise.get("error"), chained.get("error"))
    assert noise["realized"] == {"noise_scale": 0.05}
    assert noise["metrics"]["ppl_ratio"]["value"] > 1.0
    # the same seeded noise each time: the first checkup's noise was undone before the second's
    rms, rms_chained = noise["metrics"]["weight_rms"]["value"], chained["metrics"]["weight_rms"]["value"]
    assert rms == pytest.approx(rms_chained, rel=2e-2)
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "noise 5% of RMS" in report and "noise 5% of RMS → quantize rtn 8-bit per-channel" in report
    assert re.search(r"\| weight RMS \| \d\.\d{5} \|", report)
    assert "no expectation" in report


def test_the_contract_test_covers_a_plugin_kind(tmp_path):
    site = install(tmp_path / "site")
    result = run(site, "-m", "pytest", "-o", "addopts=", "-v", "-p", "no:cacheprovider", "-m", "not slow",
                 str(ROOT / "tests" / "e2e" / "test_restore_all_kinds.py"), "-k", "noise or restores or registered", cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.findall(r"::(\S+) PASSED", result.stdout)
    assert any(name.startswith("test_summary_level_and_expectation_are_declared[noise-") for name in passed), passed
    assert "test_every_example_restores_the_demo_model_exactly" in passed
    assert "test_every_kind_module_is_registered" in passed


def test_a_broken_plugin_is_skipped_with_its_name(tmp_path):
    broken = tmp_path / "src" / "doctor_noise.py"
    broken.parent.mkdir()
    broken.write_text("raise ImportError('no such backend')\n")
    site = install(tmp_path / "site", broken)
    result = doctor(site, "checkups", "validate", str(PLUGIN / "noise-suite.yaml"), cwd=tmp_path)
    assert "plugin 'noise'" in result.stderr and "no such backend" in result.stderr
    assert result.returncode == 2 and "unknown kind 'noise'" in result.stderr
