"""`doctor report RESULTS.json` (re-render from results alone) and `doctor diff A B` (what changed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from doctor.cli.errors import user_errors


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the folder of RESULTS).")
@click.pass_context
def report(ctx: click.Context, results: Path, out: Path | None) -> None:
    """Re-render report.md, report.html and plots from a results.json, without the model."""
    from doctor.report import load_examination, write_reports

    with user_errors(ctx.obj["verbose"]):
        exam = load_examination(results)
        source = results / "results.json" if results.is_dir() else results
        target = out or source.parent
        same_place = (target / "results.json").resolve() == source.resolve()
        paths = write_reports(exam, target, results=not same_place)
    for name in ("report.html", "report.md"):
        click.echo(f"{name}: {paths[name]}")


@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write diff.html and diff.md (and the plot) into this folder.")
@click.option("--all", "every", is_flag=True, help="List every shared metric in the files, not only the key and "
                                                    "the significantly changed ones.")
@click.pass_context
def diff(ctx: click.Context, a: Path, b: Path, out: Path | None, every: bool) -> None:
    """Compare two results.json files (A before, B after).

    Exit 1 only when B got significantly worse (intervals apart on the same text), a checkup newly fails, or
    the release gate changed to fail; 0 otherwise; 2 for unreadable input.
    """
    from doctor.report import load_examination
    from doctor.report.diff import diff_examinations
    from doctor.report.diff_report import terminal_summary, write_diff

    with user_errors(ctx.obj["verbose"]):
        exam_a, exam_b = load_examination(a), load_examination(b)
        result = diff_examinations(exam_a, exam_b)
        paths = write_diff(result, exam_a, exam_b, out, every) if out is not None else {}
    click.echo(terminal_summary(result), nl=False)
    for name in ("diff.html", "diff.md"):
        if name in paths:
            click.echo(f"{name}: {paths[name]}")
    sys.exit(result.exit_code)
