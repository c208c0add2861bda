"""NATS subject rules: what a valid topic is, and whether two subjects can meet.

>>> subjects_overlap("orders.*", "orders.eu"), subjects_overlap("orders.>", "billing.eu")
(True, False)

The component checks topics before the server sees them, so a typo is an
error that names the topic rather than a subscription that never receives.
"""

from __future__ import annotations

import re

from jsnb.errors import InvalidArgumentError

__all__ = ["check_topic", "subjects_overlap"]

_BAD_TOPIC = re.compile(r"(^\.|\.$|\.\.|[\s*>])")


def check_topic(topic: str, *, wildcards: bool = False, what: str = "topic") -> None:
    """Refuse topics that are not valid NATS subjects, saying what is wrong."""
    if not isinstance(topic, str) or not topic:
        raise InvalidArgumentError(
            f"jsnb: {what} {topic!r} is empty; give a subject such as 'orders'"
        )
    text = topic
    if wildcards:
        text = re.sub(r"(^|\.)(\*|>$)(?=\.|$)", r"\1x", topic)
    if _BAD_TOPIC.search(text):
        allowed = "'*' and a final '>' as whole tokens" if wildcards else "no wildcards"
        raise InvalidArgumentError(
            f"jsnb: {what} {topic!r} is not a valid NATS subject: no spaces, no empty tokens "
            f"('a..b', leading or trailing '.'), {allowed}"
        )


def subjects_overlap(a: str, b: str) -> bool:
    """True when some concrete subject matches both patterns (``*`` and ``>`` allowed)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    # '>' needs at least one more token, so patterns of unequal length meet only through it.
    return len(left) == len(right)
