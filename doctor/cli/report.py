"""`doctor report RESULTS.json` (re-render from results alone) and `doctor diff A B` (what changed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from doctor.cli.errors import user_errors
from doctor.errors import EXIT_FINDINGS, EXIT_OK


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
@click.option("--rtol", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Relative change that counts for metrics measured without an interval.")
@click.option("--all", "all_metrics", is_flag=True, help="List every compared metric, not only the changed ones.")
@click.pass_context
def diff(ctx: click.Context, a: Path, b: Path, rtol: float, all_metrics: bool) -> None:
    """Compare two results.json files; exit 1 when something changed beyond the intervals."""
    from doctor.report import load_examination
    from doctor.report.diff import diff_examinations, render_diff

    with user_errors(ctx.obj["verbose"]):
        result = diff_examinations(load_examination(a), load_examination(b), rtol=rtol)
    click.echo(render_diff(result, all_metrics=all_metrics), nl=False)
    sys.exit(EXIT_FINDINGS if result.changed else EXIT_OK)
