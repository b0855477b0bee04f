"""`doctor checkups list|show|validate`."""

from __future__ import annotations

import click

from doctor.cli import user_errors


@click.group()
def checkups() -> None:
    """Built-in checkup suites and suite files."""


@checkups.command("list")
def list_suites() -> None:
    """List the built-in suites."""
    from doctor.suites import builtin_suites, load_suite

    for name, path in builtin_suites().items():
        suite, _, _ = load_suite(str(path))
        click.echo(f"{name:22} {len(suite.checkups):3} checkups  {suite.description}")


@checkups.command()
@click.argument("suite")
@click.pass_context
def show(ctx: click.Context, suite: str) -> None:
    """Show the checkups of a suite (a built-in name or a file)."""
    from doctor.spec.modification import flatten
    from doctor.suites import load_suite

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
@click.pass_context
def validate(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Validate suite files; every problem is one line naming file, line and key path."""
    from doctor.suites import load_suite

    errors = 0
    for f in files:
        try:
            suite, _, _ = load_suite(f)
            click.echo(f"{f}: ok ({len(suite.checkups)} checkups)")
        except Exception as exc:  # report every file, then exit 2 once
            from doctor.errors import DoctorError

            if not isinstance(exc, DoctorError):
                raise
            errors += 1
            for line in str(exc).splitlines():
                click.secho(f"error: {line}", fg="red", err=True)
    if errors:
        raise SystemExit(2)
