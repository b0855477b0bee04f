"""Errors a user can cause, as the command line shows them: one line each, exit 2."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from doctor.errors import EXIT_ERROR, DoctorError


@contextmanager
def user_errors(verbose: bool = False):
    """Turn `DoctorError` into a one-line message and exit 2; tracebacks only with -v."""
    try:
        yield
    except DoctorError as exc:
        if verbose:
            raise
        from doctor.input.limits import printable

        for line in str(exc).splitlines() or [type(exc).__name__]:
            click.secho(f"error: {printable(line)}", fg="red", err=True)  # never raw control characters
        sys.exit(EXIT_ERROR)
