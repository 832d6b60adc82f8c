"""The API views' descriptions in DRF's browsable API and ``OPTIONS`` answers.

The views' docstrings use reStructuredText's inline literals (````GET /jobs/````), as every
docstring of the package does. DRF shows a docstring as Markdown when the ``markdown``
package is installed and as escaped text otherwise, so without it the double backquotes were
shown raw. ``DescribedView`` renders them itself, the same with or without ``markdown``:
paragraphs with ``<code>`` in HTML, plain words in text. (drf-spectacular reads the
docstrings separately; CommonMark, which Swagger UI renders, reads ````x```` as code too.)
"""

import re
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from rest_framework.utils.formatting import dedent

_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def describe(docstring: str, *, html: bool = False) -> str:
    """``docstring`` dedented, as plain text (``html=False``: inline literals lose their
    backquotes) or as HTML paragraphs with ``<code>`` (``html=True``, escaped and safe)."""
    text = dedent(docstring or "").strip()
    if not html:
        return _LITERAL.sub(r"\1", text)
    paragraphs = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        # One paragraph reads as one line: the docstring's line breaks are only wrapping.
        joined = " ".join(line.strip() for line in paragraph.splitlines())
        paragraphs.append(_LITERAL.sub(r"<code>\1</code>", escape(joined)))
    html_text: SafeString = mark_safe(  # noqa: S308 (escaped above; only <code> added)
        "".join(f"<p>{p}</p>" for p in paragraphs if p)
    )
    return html_text


class DescribedView:
    """Mixin for API views: the class docstring as the view's description, rendered by
    ``describe`` (a ``description`` attribute, as in DRF, takes precedence)."""

    def get_view_description(self, html: bool = False) -> str:
        """The description DRF's browsable API (``html=True``) and ``OPTIONS`` show."""
        description: Any = getattr(self, "description", None) or type(self).__doc__
        return describe(str(description or ""), html=html)
