"""How jsnb draws what users look at: one key/value table, one palette.

The palette is the one place an outcome gets its colour, so the lab's
timeline, the message table and the advisory feed agree: a NAK is orange
everywhere.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from jsnb.messages import Outcome

__all__ = [
    "ERROR_COLOUR",
    "MUTED_COLOUR",
    "OK_COLOUR",
    "OUTCOME_COLOURS",
    "WARNING_COLOUR",
    "key_value_table",
    "outcome_css",
]

ERROR_COLOUR = "#c62828"  # a failure, a refusal, a stale view: red text
OK_COLOUR = "#2e7d32"
MUTED_COLOUR = "#757575"  # notes and warnings that need no action now
WARNING_COLOUR = "#ef6c00"  # needs a look: drift, a retry

OUTCOME_COLOURS: dict[Outcome, str] = {
    Outcome.ACK: OK_COLOUR,
    Outcome.NAK: WARNING_COLOUR,  # retried: the server redelivers it
    Outcome.DEAD_LETTER: "#6a1b9a",
    Outcome.EXHAUSTED: ERROR_COLOUR,  # stored, never delivered again
    Outcome.TERM: "#455a64",
    Outcome.EXPIRED: "#6d4c41",
    Outcome.SUPERSEDED: "#90a4ae",  # a newer delivery settles the message
}


def key_value_table(rows: Iterable[tuple[object, object]], *, css_class: str = "") -> str:
    """A two-column table, keys as left-aligned headers; every key and value is escaped."""
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    cls = f" class='{html.escape(css_class)}'" if css_class else ""
    return f"<table{cls}>{body}</table>"


def outcome_css(prefix: str) -> str:
    """CSS giving each outcome its colour, for elements with class ``<prefix><outcome>``."""
    return "\n".join(
        f"{prefix}{outcome.value} {{ color: {colour}; }}"
        for outcome, colour in OUTCOME_COLOURS.items()
    )
