"""HTML for the objects users look at: the one key/value table every ``_repr_html_`` uses."""

from __future__ import annotations

import html
from collections.abc import Iterable

__all__ = ["key_value_table"]


def key_value_table(rows: Iterable[tuple[object, object]], *, css_class: str = "") -> str:
    """A two-column table, keys as left-aligned headers; every key and value is escaped."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    cls = f" class='{html.escape(css_class)}'" if css_class else ""
    return f"<table{cls}>{body}</table>"
