"""Rule templates render within an operation, time and size budget; names are checked statically."""

from __future__ import annotations

import time

import pytest

from doctor.diagnose.rule import render, undeclared_names
from doctor.diagnose.sandbox import TemplateBudgetError

BOMBS = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000000) %}{% endfor %}",
    "{% for c in 'x' * 90000 %}{% for d in 'y' * 90000 %}{% endfor %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ 'x' * 99999 * 99999 }}",
    "{{ 2 ** 100000000 }}",
    "{% set n = 2 ** 4000 %}{{ n * n * n }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ 'a' | center(1000000000) }}",
    "{{ '%999999999s' | format('a') }}",
    "{% for i in range(99999) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}",
    "{{ ('a' * 99999) | replace('a', 'b' * 99999) | length }}",
    "{{ ('a' * 99999).replace('a', 'b' * 99999) | length }}",
    "{{ (['a' * 99999] * 99999) | join | length }}",
    "{{ ''.join(['a' * 99999] * 99999) | length }}",
    "{{ 'a'.ljust(999999999) }}",
    "{{ ('\t' * 99999).expandtabs(99999) | length }}",
    "{{ [1, 2, 3] | slice(999999999) | list }}",
    "{{ (['a'] * 5000) | map('replace', 'a', 'b' * 99999) | join | length }}",
    "{{ (['a'] * 5000) | map('replace', 'a', 'b' * 99999) | list | length }}",
    "{% for i in range(5000) %}{% set x = 'b' * 99999 %}{% endfor %}",
    "{% set ns = namespace(s='') %}{% for i in range(9999) %}{% set ns.s = ns.s ~ ('x' * 9999) %}{% endfor %}",
]


@pytest.mark.parametrize("template", BOMBS)
def test_expensive_templates_stop_at_a_named_limit(template):
    start = time.perf_counter()
    with pytest.raises(TemplateBudgetError, match="limit"):
        render(template, {})
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("template, context, expected", [
    ("{% for l in layers %}{{ l }}{{ ', ' if not loop.last }}{% endfor %}", {"layers": [1, 2, 3]}, "1, 2, 3"),
    ("{{ ratio | fmt }} ({{ share | pct }}), layers {{ at | layers }}", {"ratio": 1.23456, "share": 0.5, "at": [3, 4, 7]},
     "1.23 (50%), layers 3-4, 7"),
    ("{{ '%.2f' % x }} {{ '{:>6}'.format('a') }} {{ 2 ** 10 }}", {"x": 3.14159}, "3.14      a 1024"),
    ("{{ ids | join(', ') }}; {{ '-'.join(ids) }}; {{ 'a' ~ n ~ ('b' ~ 'c') }}; {{ 'a_b' | replace('_', ' ') }}",
     {"ids": ["x", "y"], "n": 1}, "x, y; x-y; a1bc; a b"),
    ("{{ params | fmt }} ({{ params }})", {"params": 7_000_000_000}, "7000000000 (7000000000)"),
])
def test_ordinary_templates_render(template, context, expected):
    assert render(template, context) == expected


def test_names_are_found_in_every_branch():
    template = "{% if a %}{{ b }}{% else %}{{ c | fmt }}{% endif %}{% for x in d %}{{ x }}{{ loop.index }}{% endfor %}"
    assert undeclared_names(template) == {"a", "b", "c", "d"}
