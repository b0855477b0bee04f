"""The `doctor` command line: parse, run, render, exit. Errors a user can cause print one line and exit 2."""

from __future__ import annotations

import json
import logging

import click

from doctor import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="model-doctor")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and full tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Check-ups for compressed and re-configured LLMs."""
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--out", "out", type=click.Path(), default=None, help="Write the JSON Schema here (default: stdout).")
def schema(out: str | None) -> None:
    """Write the JSON Schema of checkup suite files (for editors)."""
    from doctor.spec.checkup import Suite

    text = json.dumps(Suite.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


from doctor.cli.checkups import checkups  # noqa: E402
from doctor.cli.examine import examine  # noqa: E402

main.add_command(examine)
main.add_command(checkups)
from doctor.cli.predictor import predictor  # noqa: E402

main.add_command(predictor)
from doctor.cli.report import diff, report  # noqa: E402

main.add_command(report)
main.add_command(diff)
from doctor.cli.rules import rules  # noqa: E402

main.add_command(rules)
