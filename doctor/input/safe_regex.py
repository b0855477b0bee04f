"""Regular expressions from user files (rule `matches`, task `regex`), matched by RE2 in linear time.

Python's backtracking engine takes exponential time on patterns such as `^(a+)+$`; RE2 never backtracks, so no
pattern can hang an examination. It has no backreferences or look-around; a pattern using them is refused when
the file is validated, with the engine's reason.
"""

from __future__ import annotations

import functools

import re2

from doctor.input.limits import MAX_REGEX_CHARS

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error comes back as an exception; the C++ log would add stderr lines


class RegexError(ValueError):
    """A pattern RE2 cannot compile (or one over the length limit)."""


@functools.lru_cache(maxsize=512)
def compile_safe(pattern: str):
    if len(pattern) > MAX_REGEX_CHARS:
        raise RegexError(f"regular expression of {len(pattern):,} characters, over the limit of {MAX_REGEX_CHARS:,}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(f"invalid regular expression for RE2 (no backreferences or look-around): {reason}") from None


def search(pattern: str, text: str):
    return compile_safe(pattern).search(text)
