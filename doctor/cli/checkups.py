"""`doctor checkups list|show|validate`."""

from __future__ import annotations

from pathlib import Path

import click

from doctor.cli.errors import user_errors


@click.group()
def checkups() -> None:
    """Built-in checkup suites and suite files."""


@checkups.command("list")
def list_suites() -> None:
    """List the built-in suites."""
    from doctor.spec.suites import builtin_suites, load_suite

    for name, path in builtin_suites().items():
        suite, _, _ = load_suite(str(path))
        click.echo(f"{name:22} {len(suite.checkups):3} checkups  {suite.description}")


@checkups.command()
@click.argument("suite")
@click.pass_context
def show(ctx: click.Context, suite: str) -> None:
    """Show the checkups of a suite (a built-in name or a file)."""
    from doctor.spec.modification import flatten
    from doctor.spec.suites import load_suite

    with user_errors(ctx.obj["verbose"]):
        loaded, path, _ = load_suite(suite)
    click.echo(f"{loaded.name} ({path}): {loaded.description}")
    for c in loaded.checkups:
        spec = c.modification.model_dump(exclude_defaults=True)
        expect = ", ".join(f"{k} {v.model_dump(exclude_none=True)}" for k, v in c.expect.items())
        click.echo(f"  {c.id:28} {spec}  metrics={c.metrics}  expect: {expect or '-'}")
        for leaf in flatten(c.modification):
            click.echo(f"  {'':28} {leaf.kind} defaults: {_defaults(leaf) or '-'}")


def _defaults(spec) -> str:
    """Every option the spec leaves at its default, with that default (so each deviation can be seen)."""
    given = spec.model_fields_set
    return ", ".join(f"{name}={value}" for name, value in spec.model_dump().items() if name not in given | {"kind"})


@checkups.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(path_type=Path), help="Rule directory to check too.")
def validate(files: tuple[str, ...], rule_dirs: tuple[Path, ...]) -> None:
    """Validate suite files with the checks `examine` runs before loading a model: the suite, its task files,
    corpora and task names (and rules with --rules). Every problem is one line naming file, line and key path."""
    from doctor.diagnose import load_rules
    from doctor.errors import DoctorError
    from doctor.input.preflight import check_suite

    errors = 0
    for f in files:
        try:
            checked = check_suite(f)
            click.echo(f"{f}: ok ({len(checked.suite.checkups)} checkups)")
        except DoctorError as exc:  # report every file, then exit 2 once
            errors += 1
            _print_error(exc)
    if rule_dirs:
        try:
            loaded = load_rules(list(rule_dirs))
            click.echo(f"rules: ok ({len(loaded)} in effect)")
        except DoctorError as exc:
            errors += 1
            _print_error(exc)
    if errors:
        raise SystemExit(2)


def _print_error(exc: Exception) -> None:
    from doctor.input.limits import printable

    for line in str(exc).splitlines():
        click.secho(f"error: {printable(line)}", fg="red", err=True)
