"""Ready-made artifacts side by side: a ranking by KL divergence from the original, and size on disk against KL.

A reviewer picking among quants of one model wants the file that loses least for its size, and the ones that lose
more than their bit width explains (the predictor's expectation for that width and method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from doctor.report import format as fmt
from doctor.report.labels import place_labels
from doctor.report.svg import FAIL_COLOR, PASS_COLOR, figure, label, log_axis, to_svg, wants_log
from doctor.report.view import Plot
from doctor.results import CheckupResult, Examination


@dataclass(frozen=True)
class CandidateRow:
    rank: int
    checkup: str
    file: str
    format: str
    storage: str  # what the file declares: dominant GGML type, or bits and group size
    size_mb: str
    bits_per_weight: str
    kl_mean: str
    kl_p99: str
    ppl_ratio: str
    top1: str
    expected: str
    beyond: str  # "yes" when the loss exceeds what the bit width and method explain


def candidates(exam: Examination) -> list[CheckupResult]:
    return [c for c in exam.checkups if c.modification.get("kind") == "artifact"]


def _kl(c: CheckupResult) -> float:
    value = c.value("kl_mean")
    return value if value is not None and math.isfinite(value) else math.inf


def _storage(realized: dict) -> str:
    if realized.get("dominant_type"):
        return f"{realized['dominant_type']} ({fmt.compact(100 * realized['tensor_types'][realized['dominant_type']])}% of weights)"
    if realized.get("bits"):
        group = realized.get("group_size")
        return f"{realized['bits']}-bit" + (f" g{group}" if group else " per-channel")
    return "–"


def _with_interval(c: CheckupResult, key: str) -> str:
    m = c.metrics.get(key)
    if m is None:
        return "–"
    return " ".join(filter(None, [fmt.compact(m.value, key), fmt.compact_interval(m.lower, m.upper, key)]))


def _expected(c: CheckupResult) -> tuple[str, str]:
    e = c.expected.get("ppl_ratio") if c.expected else None
    if e is None:
        return "no expectation", "–"
    band = f"{fmt.significant(e.point)} [{fmt.significant(e.lower)}, {fmt.significant(e.upper)}]"
    if not e.in_domain:
        band += "*"
    return band, "yes" if e.outside == "above" else "no"


def candidate_rows(exam: Examination) -> list[CandidateRow]:
    """Measured candidates ranked by mean KL (lowest first), then the ones that failed to load, unranked."""
    found = candidates(exam)
    measured = sorted((c for c in found if c.status == "ok"), key=lambda c: (_kl(c), c.id))
    rows = []
    for rank, c in enumerate(measured, start=1):
        r = c.realized
        expected, beyond = _expected(c)
        rows.append(CandidateRow(
            rank=rank, checkup=c.id, file=Path(str(c.modification.get("path", "?"))).name, format=str(r.get("format", "?")),
            storage=_storage(r), size_mb=_with_interval(c, "size_mb"),
            bits_per_weight=fmt.compact(r["effective_bits"]) if r.get("effective_bits") else "–",
            kl_mean=_with_interval(c, "kl_mean"), kl_p99=_with_interval(c, "kl_p99"),
            ppl_ratio=_with_interval(c, "ppl_ratio"), top1=_with_interval(c, "top1_agreement"),
            expected=expected, beyond=beyond,
        ))
    for c in found:
        if c.status != "ok":
            rows.append(CandidateRow(rank=0, checkup=c.id, file=Path(str(c.modification.get("path", "?"))).name,
                                     format="–", storage="–", size_mb="–", bits_per_weight="–", kl_mean="–",
                                     kl_p99="–", ppl_ratio="–", top1="–", expected=f"error: {c.error}", beyond="–"))
    return rows


def candidate_plot(exam: Examination, text: str) -> Plot | None:
    """Size on disk against mean KL, one labelled point per measured candidate, KL interval as a bar."""
    points = [(c.value("size_mb"), c) for c in candidates(exam)
              if c.status == "ok" and c.value("size_mb") is not None and math.isfinite(_kl(c))]
    if not points:
        return None
    name = "candidates"
    with figure(name, height=3.8) as fig:
        ax = fig.add_subplot()
        for beyond, color, marker, meaning in ((False, PASS_COLOR, "o", "within its bit width's expectation"),
                                                (True, FAIL_COLOR, "X", "loses more than its bit width explains")):
            chosen = [(x, c) for x, c in points if (_expected(c)[1] == "yes") == beyond]
            if not chosen:
                continue
            ys = [c.value("kl_mean") for _, c in chosen]
            lows = [y - (c.metrics["kl_mean"].lower if c.metrics["kl_mean"].lower is not None else y)
                    for y, (_, c) in zip(ys, chosen, strict=True)]
            highs = [(c.metrics["kl_mean"].upper if c.metrics["kl_mean"].upper is not None else y) - y
                     for y, (_, c) in zip(ys, chosen, strict=True)]
            ax.errorbar([x for x, _ in chosen], ys, yerr=[lows, highs], fmt=marker, color=color, markersize=5,
                        capsize=2, linewidth=1, label=meaning, zorder=3)
        log_y = wants_log([c.value("kl_mean") for _, c in points]) and all(c.value("kl_mean") > 0 for _, c in points)
        if log_y:
            log_axis(ax, "y")
        ax.set(xlabel="size on disk (MB)", ylabel="mean KL from the original (nats/token)",
               title="Candidates: size vs. KL")
        ax.margins(x=0.15, y=0.12)
        ax.autoscale_view()
        place_labels(ax, [(x, c.value("kl_mean"), label(c.id)) for x, c in points])
        ax.legend(frameon=False, loc="upper right")
        svg = to_svg(fig, name)
    caption = ("Each candidate's files on disk against its mean per-token KL divergence from the original "
               "(bars: 95% interval over windows where measured); red crosses lose more perplexity than the "
               "predictor expects for their bit width and method." + (" Log scale on KL." if log_y else "")
               + f" {text}")
    return Plot(name=name, title="Candidates: size vs. KL", caption=caption, svg=svg, file=f"plots/{name}.svg",
                section="candidates")
