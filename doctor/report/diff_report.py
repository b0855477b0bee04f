"""`doctor diff --out`: the comparison as diff.html and diff.md (and a plot), plus a short plain terminal summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from doctor.report import format as fmt
from doctor.report.diff import BASELINE, ExaminationDiff, MetricChange
from doctor.report.gate import key_metric
from doctor.report.json import write_text_atomic
from doctor.report.svg import error_bars_of, figure, label, log_axis, series_color, to_svg, wants_log
from doctor.report.templating import html_environment, markdown_environment
from doctor.report.view import Plot
from doctor.results import Examination, Finding

Rows = list[list[str]]


@dataclass(frozen=True)
class FindingGroup:
    title: str
    meaning: str
    rows: Rows  # severity, rule, title, checkups


@dataclass
class DiffView:
    title: str
    a: str
    b: str
    gate_line: str
    gate_state: str  # the state of B's gate, for the banner's colour
    gate_reasons: tuple[str, str]
    exit_line: str
    texts: list[str]
    warnings: list[str]
    counts: str
    verdicts: Rows
    modified: Rows
    metrics: Rows  # checkup, metric, A, B, change, significance
    other_metrics: int
    only_a: str
    only_b: str
    findings: list[FindingGroup]
    plot: Plot | None


def _measure(m, key: str) -> str:
    return f"{fmt.compact(m.value, key)} {fmt.compact_interval(m.lower, m.upper, key)}".strip()


def _change(m: MetricChange) -> str:
    a, b = m.a.value, m.b.value
    if a == 0 or a != a or b != b:
        return "–"
    return f"{100 * (b - a) / abs(a):+.1f}%"


def _metric_rows(d: ExaminationDiff, key_only: dict[str, str], every: bool) -> tuple[Rows, int]:
    """Significant changes first, then each shared checkup's key metric (or every metric); the rest is counted."""
    shown, rest = [], 0
    for m in sorted(d.metrics, key=lambda m: (m.status not in ("worse", "better", "changed"), m.checkup)):
        if every or m.status in ("worse", "better", "changed") or key_only.get(m.checkup) == m.metric:
            shown.append([m.checkup, fmt.metric_label(m.metric), _measure(m.a, m.metric), _measure(m.b, m.metric), _change(m), m.status])
        else:
            rest += 1
    return shown, rest


def _finding_rows(findings: list[Finding]) -> Rows:
    return [[f.severity, f.rule, f.title, ", ".join(f.checkups)] for f in findings]


def build_diff_view(d: ExaminationDiff, a: Examination, b: Examination, plot: Plot | None,
                    every: bool = False) -> DiffView:
    keys = {c.id: key_metric(c) or "" for c in a.checkups}
    keys[BASELINE] = "ppl"
    metrics, rest = _metric_rows(d, keys, every)
    worse, better = len(d.worse), sum(1 for m in d.metrics if m.status == "better")
    return DiffView(
        title=f"model-doctor diff: {d.a_model} → {d.b_model}", a=_describe(a), b=_describe(b),
        gate_line="Release gate: " + _plain_gate(d),
        gate_state=d.b_gate.state, gate_reasons=(d.a_gate.reason, d.b_gate.reason), exit_line=exit_line(d),
        texts=d.texts_differ, warnings=d.warnings,
        counts=(f"{len(d.shared_checkups)} shared checkups, {len(d.only_b)} only in B, {len(d.only_a)} only in A; "
                f"{len(d.metrics)} shared metrics: {worse} significantly worse, {better} significantly better"),
        verdicts=[list(v) for v in d.verdicts], modified=[list(m) for m in d.modified_checkups],
        metrics=metrics, other_metrics=rest, only_a=", ".join(d.only_a), only_b=", ".join(d.only_b),
        findings=[
            FindingGroup("New findings", "on checkups both runs measured", _finding_rows(d.new_findings)),
            FindingGroup("Resolved findings", "in A, gone in B although B measured their checkups",
                         _finding_rows(d.resolved_findings)),
            FindingGroup("No longer measured", "in A, on checkups B did not run: not resolved, unknown",
                         _finding_rows(d.unmeasured_findings)),
            FindingGroup("On checkups only B ran", "new coverage, not a regression",
                         _finding_rows(d.coverage_findings)),
        ],
        plot=plot,
    )


def _describe(exam: Examination) -> str:
    suite = exam.suite.get("name", "–")
    return f"{exam.patient.id}, suite {suite}, {exam.started}, {fmt.describe_text_short(exam.baseline.text)}"


def exit_line(d: ExaminationDiff) -> str:
    reasons = []
    if d.gate_to_fail:
        reasons.append("the release gate changed to fail")
    if d.verdicts_worse:
        reasons.append("checkups newly fail: " + ", ".join(v[0] for v in d.verdicts_worse))
    if d.worse:
        reasons.append("significantly worse: " + ", ".join(f"{m.checkup} {fmt.metric_label(m.metric)}"
                                                          for m in d.worse[:5]) + (" …" if len(d.worse) > 5 else ""))
    if not reasons:
        return "exit 0: nothing got significantly worse and the gate did not change to fail"
    return "exit 1: " + "; ".join(reasons)


def shared_plot(d: ExaminationDiff, a: Examination, b: Examination) -> Plot | None:
    """The key metric of every shared checkup, A beside B, with intervals."""
    a_by, b_by = {c.id: c for c in a.checkups}, {c.id: c for c in b.checkups}
    rows = []
    for cid in d.shared_checkups:
        key = key_metric(a_by[cid])
        if key == "ppl_ratio" and key in a_by[cid].metrics and key in b_by[cid].metrics:
            rows.append((cid, a_by[cid].metrics[key], b_by[cid].metrics[key]))
    if not rows:
        return None
    name = "diff-shared"
    left = min(3.0, 0.3 + 0.065 * max(len(cid) for cid, _, _ in rows))
    with figure(name, height=max(2.4, 1.0 + 0.32 * len(rows)), left=left) as fig:
        ax = fig.add_subplot()
        ys = list(range(len(rows)))
        for side, offset, marker, index in (("A", -0.12, "o", 0), ("B", 0.12, "D", 1)):
            ms = [r[1 + index] for r in rows]
            ax.errorbar([m.value for m in ms], [y + offset for y in ys], xerr=error_bars_of(ms), fmt=marker,
                        color=series_color(index), markersize=4, capsize=2, linewidth=1, label=side)
        values = [m.value for _, ma, mb in rows for m in (ma, mb)]
        if wants_log(values):
            log_axis(ax, "x")
        ax.set_yticks(ys, [label(cid) for cid, _, _ in rows])
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="ppl ratio (bars: 95% bootstrap intervals)", title="Shared checkups: A and B")
        ax.legend(frameon=False, loc="best")
        svg = to_svg(fig, name)
    caption = (f"Perplexity ratio of the {len(rows)} shared checkups judged by it, A (circles) beside B "
               "(diamonds), with their bootstrap intervals" + (" on a log axis" if wants_log(values) else "") + ".")
    if d.texts_differ:
        caption += " The two runs used different evaluation texts: " + "; ".join(d.texts_differ) + "."
    return Plot(name=name, title="Shared checkups", caption=caption, svg=svg, file=f"plots/{name}.svg")


def render_diff_reports(d: ExaminationDiff, a: Examination, b: Examination, every: bool = False) -> dict[str, str]:
    """diff.html, diff.md and the plot; `every` lists every shared metric, not only key and significant ones."""
    plot = shared_plot(d, a, b)
    view = build_diff_view(d, a, b, plot, every)
    files = {"diff.html": html_environment().get_template("diff.html.j2").render(view=view),
             "diff.md": markdown_environment().get_template("diff.md.j2").render(view=view)}
    files["diff.md"] = fmt.squeeze_blank_lines(files["diff.md"])
    if plot is not None:
        files[plot.file] = plot.svg + "\n"
    return files


def write_diff(d: ExaminationDiff, a: Examination, b: Examination, out_dir: Path,
               every: bool = False) -> dict[str, Path]:
    files = render_diff_reports(d, a, b, every)
    return {name: write_text_atomic(Path(out_dir) / name, text) for name, text in files.items()}


def terminal_summary(d: ExaminationDiff) -> str:
    """A few plain lines for the terminal; the tables live in the files."""
    lines = [f"A: {d.a_model}  B: {d.b_model}", f"gate: {_plain_gate(d)}"]
    if d.texts_differ:
        lines.append("texts differ: " + "; ".join(d.texts_differ) + " (metric changes are shown, not judged)")
    lines += [f"warning: {w}" for w in d.warnings]
    worse, better = len(d.worse), sum(1 for m in d.metrics if m.status == "better")
    lines.append(f"checkups: {len(d.shared_checkups)} shared, {len(d.only_b)} only in B, {len(d.only_a)} only in A")
    lines.append(f"metrics: {worse} significantly worse, {better} significantly better, of {len(d.metrics)} shared")
    lines.append(f"findings: {len(d.new_findings)} new, {len(d.resolved_findings)} resolved, "
                 f"{len(d.unmeasured_findings)} no longer measured, {len(d.coverage_findings)} on checkups only B ran")
    lines.append(exit_line(d))
    return "\n".join(lines) + "\n"


def _plain_gate(d: ExaminationDiff) -> str:
    a, b = d.a_gate.headline.removeprefix("Release gate: "), d.b_gate.headline.removeprefix("Release gate: ")
    return f"{a} (exit {d.a_exit}) → {b} (exit {d.b_exit})" + ("" if d.gate_changed else " (unchanged)")
