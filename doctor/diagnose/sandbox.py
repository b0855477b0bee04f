"""A Jinja sandbox with a budget: rule templates come from user files and are rendered after every checkup.

Jinja's own sandbox stops attribute tricks but not work: nested `range(100000)` loops or `'x' * 10**9` run
until memory or patience runs out. Here every loop iteration, call, filter, operator and `~` concatenation
spends from an operation budget with a deadline, and every value they build is added to an allocation budget.
Operations that could build a huge value in one step (repetition, powers, replace, join, padding widths,
option numbers) are estimated before they run. Exceeding a budget raises `TemplateBudgetError`, naming it.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from doctor.input.limits import MAX_TEMPLATE_OPS, MAX_TEMPLATE_OUTPUT, MAX_TEMPLATE_SECONDS

MAX_ALLOCATED = 10 * MAX_TEMPLATE_OUTPUT  # characters of all values a render builds together
_MAX_INT_BITS = 4096  # integers beyond this are not evidence but a way to burn CPU
# a printf or str.format width/precision this long pads to megabytes in one step
_WIDE_FORMAT = re.compile(r"(%[-+ #0]*(\*|\d{6,}))|(%[-+ #0]*\d*\.(\*|\d{6,}))|(\{[^{}]*:[^{}]*\d{6,}[^{}]*\})")
_BUDGET_ITER, _BUDGET_CONCAT = "__budgeted_iter", "__budgeted_concat"


class TemplateBudgetError(SecurityError):
    """A template that would take too many operations, too long, or too much memory."""


@dataclass
class _Budget:
    ops: int
    deadline: float
    allocated: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any) -> int:
    """Characters a value holds (a list: one per element plus its strings' characters)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(v) for v in value if isinstance(v, (str, bytes)))
    return 1


def _spend(count: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.ops -= count
    if budget.ops < 0:
        raise TemplateBudgetError(f"template exceeds the limit of {MAX_TEMPLATE_OPS:,} operations")
    if time.monotonic() > budget.deadline:
        raise TemplateBudgetError(f"template exceeds the limit of {MAX_TEMPLATE_SECONDS:g} s")


def _refuse_size(size: int) -> None:
    if size > MAX_TEMPLATE_OUTPUT:
        raise TemplateBudgetError(f"template builds a value over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")


def _built(value: Any) -> Any:
    """Account for a value an operation built: its own size, and the render's total."""
    size = _size(value)
    _refuse_size(size)
    budget = _BUDGET.get()
    if budget is not None:
        budget.allocated += size
        if budget.allocated > MAX_ALLOCATED:
            raise TemplateBudgetError(f"template builds values over the limit of {MAX_ALLOCATED:,} characters in all")
    return value


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateBudgetError(f"template format width over the limit of {MAX_TEMPLATE_OUTPUT:,} characters")


def _check_options(name: str, options: Iterable[Any]) -> None:
    """Numbers passed as options (widths, counts, slices) are small in any sensible template."""
    if any(_is_int(v) and abs(v) > MAX_TEMPLATE_OUTPUT for v in options):
        raise TemplateBudgetError(f"'{name}' option over the limit of {MAX_TEMPLATE_OUTPUT:,}")


def _estimate(name: str, target: Any, args: tuple) -> None:
    """The size of what `replace`, `join` and `expandtabs` would build, checked before they build it."""
    if name == "replace" and isinstance(target, str) and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = args[0], args[1]
        count = target.count(old) if old else len(target) + 1
        _refuse_size(len(target) + count * max(0, len(new) - len(old)))
    elif name == "join" and isinstance(target, (list, tuple)):
        sep = args[0] if args and isinstance(args[0], str) else ""
        _refuse_size(sum(len(str(v)) for v in target) + len(sep) * len(target))
    elif name == "expandtabs" and isinstance(target, str):
        tab = args[0] if args and _is_int(args[0]) else 8
        _refuse_size(len(target) + target.count("\t") * tab)


def _budgeted_iter(iterable: Iterable) -> Iterator:
    for item in iterable:
        _spend()
        yield item


def _budgeted_concat(*parts: Any) -> str:
    _spend()
    _refuse_size(sum(len(str(p)) for p in parts))
    return _built("".join(str(p) for p in parts))


def _guard_filter(name: str, func):
    # Jinja passes the context or environment first to filters marked so; the filtered value comes next
    value_at = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps Jinja's pass_context / pass_environment marks
    def guarded(*args, **kwargs):
        _spend()
        value, options = (args[value_at] if len(args) > value_at else None), args[value_at + 1 :]
        _check_options(name, [*options, *kwargs.values()])
        if name == "format":
            _check_format(value)
        if name == "join" and not isinstance(value, (list, tuple, str)) and value is not None:
            value = [_built(v) for v in _budgeted_iter(value)]  # a generator: count each item as it comes
            args = (*args[:value_at], value, *options)
        _estimate(name, value, options)
        return _built(func(*args, **kwargs))

    return guarded


class BudgetedSandbox(SandboxedEnvironment):
    """`render_budgeted(template, context)` renders within `MAX_TEMPLATE_OPS` and `MAX_TEMPLATE_SECONDS`."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "-"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals[_BUDGET_ITER] = _budgeted_iter
        self.globals[_BUDGET_CONCAT] = _budgeted_concat
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
        """Every `for` loop iterates through the budget, and every `~` concatenation is accounted."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_BUDGET_ITER, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
        for parent in list(tree.find_all(nodes.Node)):
            for field in parent.fields:
                child = getattr(parent, field, None)
                if isinstance(child, nodes.Concat):
                    setattr(parent, field, self._budgeted_concat(child))
                elif isinstance(child, list):  # in place: a replaced Concat's Call shares this list
                    child[:] = [self._budgeted_concat(c) if isinstance(c, nodes.Concat) else c for c in child]
        return tree

    @staticmethod
    def _budgeted_concat(node: nodes.Concat) -> nodes.Call:
        return nodes.Call(nodes.Name(_BUDGET_CONCAT, "load"), node.nodes, [], None, None, lineno=node.lineno)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        _spend()
        target = getattr(__obj, "__self__", None)
        if isinstance(target, str):  # a string method: widths, replace, join and tabs estimated first
            name = getattr(__obj, "__name__", "")
            _check_options(name, [*args, *kwargs.values()])
            if name == "join" and args and not isinstance(args[0], (list, tuple, str)):
                args = ([_built(v) for v in _budgeted_iter(args[0])], *args[1:])
            _estimate(name, args[0] if name == "join" and args else target,
                      (target,) if name == "join" else args)
        return _built(super().call(__context, __obj, *args, **kwargs))

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
                if isinstance(seq, (str, list, tuple)) and _is_int(times):
                    _refuse_size(_size(seq) * times)
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            _refuse_size(_size(left) + _size(right))
        if operator == "%":
            _check_format(left)
        return _built(super().call_binop(context, operator, left, right))

    def render_budgeted(self, source: str, context: dict[str, Any]) -> str:
        token = _BUDGET.set(_Budget(MAX_TEMPLATE_OPS, time.monotonic() + MAX_TEMPLATE_SECONDS))
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


def _result_bits(operator: str, left: int, right: int) -> float:
    if operator == "**":
        return right * math.log2(abs(left)) if abs(left) > 1 else 1
    return left.bit_length() + right.bit_length() if operator == "*" else 1
