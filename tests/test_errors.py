"""errors: the typed errors the CLI turns into one line, and the first line of foreign ones."""

from __future__ import annotations

from regrisk.errors import (CardError, EvaluationError, InputError, ModelError, RegriskError,
                            first_line)


def test_first_line_of_a_long_message():
    exc = RuntimeError("  the real reason\n  Traceback (most recent call last):\n  ...")
    assert first_line(exc) == "the real reason"
    assert first_line(exc, typed=True) == "RuntimeError: the real reason"
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10


def test_an_empty_message_gives_the_type_name():
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError(""), typed=True) == "OSError"


def test_the_classes_callers_catch():
    assert issubclass(CardError, ModelError) and issubclass(ModelError, ValueError)
    assert issubclass(InputError, ValueError) and issubclass(InputError, RegriskError)
    assert issubclass(EvaluationError, RegriskError) and issubclass(EvaluationError, RuntimeError)
