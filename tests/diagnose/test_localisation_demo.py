"""On the demo model, round-to-nearest spreads its damage evenly: no localisation rule may fire."""

from __future__ import annotations

import math

from doctor.examination.runner import Options, examine
from doctor.spec.checkup import Suite

LOCALISATION = {"module-localised-damage", "outlier-channel-damage", "attention-entropy-shift"}


def test_even_damage_on_the_demo_fires_no_localisation_rule(demo_patient, tmp_path):
    metrics = ["perplexity", "layer_error"]
    suite = Suite.model_validate({
        "name": "even", "eval": {"max_windows": 2, "bootstrap": 0},
        "checkups": [{"id": "rtn-w3", "modification": {"kind": "quantize", "bits": 3, "group_size": 32},
                      "metrics": metrics}],
    })
    exam = examine(demo_patient, suite, Options(out_dir=tmp_path, use_predictor=False))
    (c,) = exam.checkups
    cells = [v for s in c.layers for k, v in s.extra.items() if k.startswith("module_error.")]
    assert len(cells) >= 20 and c.metrics["ppl_ratio"].value > 1.02  # measured, damaged, and the rule applies
    top = sorted(cells, reverse=True)[: math.ceil(0.05 * len(cells))]
    assert sum(top) / sum(cells) < 0.2  # even: the top 5% of cells hold about their share
    assert not LOCALISATION & {f.rule for f in exam.findings}
    # the probe's extra passes are priced, for the baseline's capture and for the checkup's comparison
    assert exam.baseline.health["layer_probe_passes"] > 0 and c.metrics["layer_probe_passes"].value > 0
