"""The Jinja2 environments: HTML autoescaped, Markdown escaped by a finalize hook; both StrictUndefined."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from doctor.report.format import md_escape

TEMPLATES = Path(__file__).parent / "templates"


def _trusted_svg(svg: str) -> Markup:
    """SVG made by doctor.report.svg, whose text nodes are XML-escaped there; only plots use this."""
    return Markup(svg)


@cache
def html_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["trusted_svg"] = _trusted_svg
    return env


@cache
def markdown_environment() -> Environment:
    # finalize escapes every printed value, so external strings cannot inject Markdown or HTML.
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=False, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, finalize=md_escape,
    )
