"""`doctor rules list|validate|explain`: the diagnosis rules, built-in and the user's."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import click

from doctor.cli.errors import user_errors
from doctor.errors import EXIT_ERROR, DoctorError
from doctor.input.limits import printable

_RULES_OPTION = click.option(
    "--rules", "rule_dirs", multiple=True, type=click.Path(path_type=Path), help="Extra rule directory (repeatable)."
)


@click.group()
def rules() -> None:
    """Diagnosis rules: list, validate and explain them."""


@rules.command("list")
@_RULES_OPTION
@click.pass_context
def list_rules(ctx: click.Context, rule_dirs: tuple[Path, ...]) -> None:
    """List the rules in effect (built-in, then user rules overriding them by id)."""
    from doctor.diagnose import load_rules

    with user_errors(ctx.obj["verbose"]):
        loaded = load_rules(list(rule_dirs))
    for item in sorted(loaded, key=lambda i: i.rule.id):
        state = "" if item.rule.enabled else "  (disabled)"
        click.echo(f"{item.rule.id:32} {item.rule.finding.severity:8} {item.rule.title}  [{item.source}]{state}")


@rules.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Validate rule files; every problem is one line naming file, line, rule id and key path."""
    from doctor.diagnose import load_rule_file

    failed = False
    for path in files:
        try:
            loaded = load_rule_file(path)
        except DoctorError as exc:
            failed = True
            for line in str(exc).splitlines():
                click.secho(f"error: {printable(line)}", fg="red", err=True)
            continue
        click.echo(f"{path}: ok (rule {loaded.rule.id})")
    if failed:
        sys.exit(EXIT_ERROR)


@rules.command()
@click.argument("rule_id")
@_RULES_OPTION
@click.pass_context
def explain(ctx: click.Context, rule_id: str, rule_dirs: tuple[Path, ...]) -> None:
    """Explain one rule: what it detects, when it fires, what it reports."""
    import difflib

    import yaml

    from doctor.diagnose import load_rules
    from doctor.errors import ConfigError

    with user_errors(ctx.obj["verbose"]):
        loaded = {item.rule.id: item for item in load_rules(list(rule_dirs))}
        if rule_id not in loaded:
            close = difflib.get_close_matches(rule_id, list(loaded), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `doctor rules list`"
            raise ConfigError(f"no rule '{rule_id}'{hint}")
    item = loaded[rule_id]
    rule = item.rule
    click.echo(f"{rule.id}: {rule.title}  (severity {rule.finding.severity}, cause {rule.finding.cause})")
    click.echo(f"source: {item.source}  sha256 {item.sha256[:16]}")
    if rule.description:
        click.echo("\n" + textwrap.fill(" ".join(rule.description.split()), 100))
    scope = {"checkup": "each selected checkup", "group": f"each group by {rule.group_by}", "exam": "the examination"}
    click.echo(f"\nevaluated for: {scope[rule.for_each]}")
    if rule.select is not None:
        click.echo(f"selects: {rule.select.model_dump(exclude_defaults=True)}")
    if rule.when is not None:
        when = rule.when.model_dump(by_alias=True, exclude_defaults=True)
        click.echo("when:\n" + textwrap.indent(yaml.safe_dump(when, sort_keys=False), "  ").rstrip())
    if rule.finding.recommendation:
        click.echo("\nrecommendation (template): " + " ".join(rule.finding.recommendation.split()))
    if rule.finding.reference:
        click.echo(f"reference: {rule.finding.reference}")
