"""positional_deprecated: keyword-only arguments still taken by position for a while, with a warning."""

from __future__ import annotations

import inspect
import warnings

import pytest

from streamline_lib.core.deprecation import positional_deprecated


@positional_deprecated("b", "c")
def join(a, *, b="B", c="C", d="D"):
    return a + b + c + d


def test_a_keyword_call_passes_through_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert join("a", c="x") == "aBxD"
        assert join("a") == "aBCD"
    assert str(inspect.signature(join)) == "(a, *, b='B', c='C', d='D')"  # help() shows the keyword-only form


def test_a_positional_call_warns_at_the_caller_and_names_the_keyword_form():
    with pytest.warns(DeprecationWarning) as caught:
        assert join("a", "x", d="y") == "axCy"
    (warning,) = caught
    assert str(warning.message) == (f"{__name__}.join() got b by position, which is deprecated (keyword-only now): "
                                    "call join(a, b=...)")
    assert warning.filename == __file__
    with pytest.warns(DeprecationWarning, match=r"got b, c by position.*call join\(a, b=\.\.\., c=\.\.\.\)"):
        assert join("a", "x", "y") == "axyD"


def test_calls_python_would_refuse_are_refused():
    with pytest.raises(TypeError, match=r"takes at most 3 positional arguments \(2 of them deprecated\) but 4"):
        join("a", "x", "y", "z")
    with pytest.raises(TypeError, match="got multiple values for argument 'b'"):
        join("a", "x", b="y")


def test_only_keyword_only_parameters_can_be_named():
    with pytest.raises(TypeError, match="not keyword-only: a"):
        positional_deprecated("a")(lambda a, *, b=1: None)
    with pytest.raises(TypeError, match="not keyword-only: e"):
        positional_deprecated("e")(join.__wrapped__)
