"""Old call forms that still work for a while, with a :class:`DeprecationWarning` that says what to write instead.

:func:`positional_deprecated` lets arguments that became keyword-only still be passed by
position, as the notebooks do until they move to the keyword form (issue 22).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import TypeVar

__all__ = ["positional_deprecated"]

F = TypeVar("F", bound=Callable)


def positional_deprecated(*names: str) -> Callable[[F], F]:
    """Accept the keyword-only parameters ``names`` by position too, in that order, with a warning.

    ``names`` are the parameters that used to follow the positional ones, in their old
    order. A call that passes some of them by position gets them as keywords and a
    :class:`DeprecationWarning` that names the call and its keyword form; a keyword call
    is passed through untouched. The signature that :func:`inspect.signature` shows
    stays the keyword-only one.
    """

    def decorate(function: F) -> F:
        parameters = inspect.signature(function).parameters
        kinds = [p.kind for p in parameters.values()]
        if inspect.Parameter.VAR_POSITIONAL in kinds:
            raise TypeError(f"{function.__qualname__} takes *args: its extra positional arguments are not deprecated")
        positional = [p.name for p in parameters.values()
                      if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        wrong = [n for n in names if n not in parameters or parameters[n].kind is not inspect.Parameter.KEYWORD_ONLY]
        if wrong or not names:
            raise TypeError(f"positional_deprecated needs keyword-only parameters of {function.__qualname__}; "
                            f"not keyword-only: {', '.join(wrong) or '(none given)'}")

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            extra = args[len(positional):]
            if not extra:
                return function(*args, **kwargs)
            if len(extra) > len(names):
                raise TypeError(f"{function.__qualname__}() takes at most {len(positional) + len(names)} positional "
                                f"arguments ({len(names)} of them deprecated) but {len(args)} were given")
            moved = dict(zip(names, extra))
            twice = [n for n in moved if n in kwargs]
            if twice:
                raise TypeError(f"{function.__qualname__}() got multiple values for argument {twice[0]!r}")
            call = f"{function.__name__}({', '.join([*positional, *(f'{n}=...' for n in moved)])})"
            warnings.warn(f"{function.__module__}.{function.__qualname__}() got {', '.join(moved)} by position, "
                          f"which is deprecated (keyword-only now): call {call}", DeprecationWarning, stacklevel=2)
            return function(*args[: len(positional)], **moved, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
