"""A griffe extension for the API reference: read a Google-style ``Example:``
section as ``Examples:``.

The house style writes ``Example:`` (Keras' spelling); griffe's Google parser
knows only ``Examples:`` as the section whose ``>>>`` lines become code, and
would render the doctests as running text.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
