"""A Jinja sandbox with a budget: rule templates come from user files and are rendered after every checkup.

Jinja's own sandbox stops attribute tricks but not work: nested `range(100000)` loops or `'x' * 10**9` run
until memory or patience runs out. Here every loop iteration, call and filter spends from an operation
budget with a deadline, and the operations that allocate in one step (repetition, powers, padding widths) are
checked before they run. Exceeding any of them raises `TemplateBudgetError`, which names the limit.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from doctor.limits import MAX_TEMPLATE_OPS, MAX_TEMPLATE_OUTPUT, MAX_TEMPLATE_SECONDS


class TemplateBudgetError(SecurityError):
    """A template that would take too many operations, too long, or too much memory."""


_BUDGET: contextvars.ContextVar[list | None] = contextvars.ContextVar("template_budget", default=None)
_BUDGET_ITER = "__budgeted_iter"
# a printf or str.format width/precision this long pads to megabytes in one step
_WIDE_FORMAT = re.compile(r"(%[-+ #0]*(\*|\d{6,}))|(%[-+ #0]*\d*\.(\*|\d{6,}))|(\{[^{}]*:[^{}]*\d{6,}[^{}]*\})")
_MAX_INT_BITS = 4096  # integers beyond this are not evidence but a way to burn CPU
_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _result_bits(operator: str, left: int, right: int) -> float:
    if operator == "**":
        return right * math.log2(abs(left)) if abs(left) > 1 else 1
    return left.bit_length() + right.bit_length() if operator == "*" else 1


def _spend(count: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget[0] -= count
    if budget[0] < 0:
        raise TemplateBudgetError(f"template exceeds the limit of {MAX_TEMPLATE_OPS:,} operations")
    if time.monotonic() > budget[1]:
        raise TemplateBudgetError(f"template exceeds the limit of {MAX_TEMPLATE_SECONDS:g} s")


def _sized(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_TEMPLATE_OUTPUT:
        raise TemplateBudgetError(f"template builds a value over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")
    return value


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateBudgetError(f"template format width over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")


def _budgeted_iter(iterable: Iterable) -> Iterator:
    for item in iterable:
        _spend()
        yield item


def _guard_filter(name: str, func):
    @functools.wraps(func)  # keeps Jinja's pass_context / pass_environment marks
    def guarded(*args, **kwargs):
        _spend()
        if name in _WIDTH_FILTERS and any(
            isinstance(a, int) and a > MAX_TEMPLATE_OUTPUT for a in (*args, *kwargs.values())
        ):
            raise TemplateBudgetError(f"filter '{name}' width over the limit of {MAX_TEMPLATE_OUTPUT:,}")
        if name == "format" and args:
            _check_format(args[0])
        return _sized(func(*args, **kwargs))

    return guarded


class BudgetedSandbox(SandboxedEnvironment):
    """`render_budgeted(template, context)` renders within `MAX_TEMPLATE_OPS` and `MAX_TEMPLATE_SECONDS`."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals[_BUDGET_ITER] = _budgeted_iter
        self.globals["range"] = lambda *args: _budgeted_iter(self._range(*args))

    def _range(self, *args: int) -> range:
        span = range(*args)
        if len(span) > MAX_TEMPLATE_OPS:
            raise TemplateBudgetError(f"range of {len(span):,} over the limit of {MAX_TEMPLATE_OPS:,} operations")
        return span

    def add_filters(self, filters: dict[str, Any]) -> None:
        """Register filters behind the budget guard (the built-in ones are guarded at construction)."""
        self.filters.update({name: _guard_filter(name, f) for name, f in filters.items()})

    def guard_builtin_filters(self) -> None:
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every `for` loop iterates through the budget, whatever it iterates over."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_BUDGET_ITER, "load"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        return tree

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _spend()
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)  # 'x'.format / format_map: the string is the format
        return wrapped

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if _is_int(left) and _is_int(right) and _result_bits(operator, left, right) > _MAX_INT_BITS:
            raise TemplateBudgetError(f"template integer over the limit of {_MAX_INT_BITS:,} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and _is_int(times) and len(seq) * times > MAX_TEMPLATE_OUTPUT:
                    raise TemplateBudgetError(
                        f"template repetition over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")
        if operator == "%":
            _check_format(left)
        return _sized(super().call_binop(context, operator, left, right))

    def render_budgeted(self, source: str, context: dict[str, Any]) -> str:
        token = _BUDGET.set([MAX_TEMPLATE_OPS, time.monotonic() + MAX_TEMPLATE_SECONDS])
        try:
            size, parts = 0, []
            for part in self.from_string(source).generate(context):
                size += len(part)
                if size > MAX_TEMPLATE_OUTPUT:
                    raise TemplateBudgetError(f"template output over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")
                parts.append(part)
            return "".join(parts)
        finally:
            _BUDGET.reset(token)
