"""Griffe extension for the API reference: tfbert's docstrings follow Model Garden's spelling, which
Google-style Markdown rendering would show as prose — doctests titled ``Example:`` (only
``Examples:`` is a code section) and Sphinx roles (``:class:`Predictor```)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    """Retitle ``Example:`` sections ``Examples:`` and turn Sphinx roles into code spans, before the
    docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", value)
