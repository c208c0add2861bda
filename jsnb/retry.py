"""The redelivery rule: when the server redelivers, and when it stops.

>>> rule = RetryRule(ack_wait=1.0, backoff=(1.0, 5.0), max_deliver=4)
>>> [rule.nak_delay(n) for n in (1, 2, 3)], rule.is_last(4)
([1.0, 5.0, 5.0], True)

One small immutable value, built from the consumer config the server holds
(:meth:`RetryRule.from_config`), so the subscription, the redelivery lab's
predictions and the tutorials can never disagree about it. Before a consumer
exists, :meth:`RetryRule.from_metadata` says what the server will hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js import api

    from jsnb.metadata import Metadata

__all__ = ["SERVER_ACK_WAIT", "RetryRule", "backoff_at"]

SERVER_ACK_WAIT = 30.0  # nats-server's ack wait when a consumer sets none


def backoff_at(backoff: Sequence[float], attempt: int) -> float:
    """backOff's seconds for delivery *attempt* (1-based); the last value repeats."""
    return backoff[min(max(attempt, 1), len(backoff)) - 1]


@dataclass(frozen=True, slots=True)
class RetryRule:
    """How one consumer redelivers: ack deadlines, NAK delays, the last delivery.

    *ack_wait* is the server's (with backOff, nats-server sets it to
    backOff[0]); *max_deliver* 0 or below means unlimited.
    """

    ack_wait: float = SERVER_ACK_WAIT
    backoff: tuple[float, ...] = ()
    max_deliver: int = -1

    @classmethod
    def from_config(cls, cfg: api.ConsumerConfig) -> RetryRule:
        """The rule of a consumer as the server returned it (its info's ``config``)."""
        backoff = tuple(cfg.backoff or ())
        return cls(
            ack_wait=cfg.ack_wait or (backoff[0] if backoff else SERVER_ACK_WAIT),
            backoff=backoff,
            max_deliver=cfg.max_deliver or -1,
        )

    @classmethod
    def from_metadata(cls, md: Metadata) -> RetryRule:
        """The rule the server will hold for a new consumer made from *md*."""
        backoff = tuple(v.total_seconds() for v in md.back_off)
        wait = backoff[0] if backoff else md.ack_wait.total_seconds() or SERVER_ACK_WAIT
        return cls(ack_wait=wait, backoff=backoff, max_deliver=md.max_deliver or -1)

    def ack_deadline(self, attempt: int) -> float:
        """Seconds the server waits for an ack of delivery *attempt* before redelivering."""
        return backoff_at(self.backoff, attempt) if self.backoff else self.ack_wait

    def nak_delay(self, attempt: int) -> float:
        """Seconds between a failed delivery *attempt* and its redelivery.

        backOff's value for the attempt, else the ack wait: a failure is retried
        when the server would have retried a lost ack. Upstream NAKs with ackWait,
        or at once when ackWait is unset (a poison message then loops thousands of
        times a second); docs/behaviour.md says why we differ.
        """
        return self.ack_deadline(attempt)

    def nak_request(self, attempt: int) -> float:
        """The delay to send with the NAK so redelivery comes after :meth:`nak_delay`.

        Measured on nats-server 2.15: on a consumer with backOff a NAK asking for
        d after delivery n is redelivered after d + backOff[n-1] - backOff[0]. So
        asking for backOff[0] yields backOff[n-1]; without backOff the delay is
        taken as is.
        """
        if self.backoff:
            return self.backoff[0]
        return self.ack_wait

    def is_last(self, attempt: int) -> bool:
        """True when the server will not deliver the message again after *attempt*."""
        return 0 < self.max_deliver <= attempt

    def describe(self) -> str:
        """One line for logs and labels."""
        limit = str(self.max_deliver) if self.max_deliver > 0 else "unlimited"
        backoff = ", ".join(f"{v:g}s" for v in self.backoff) or "none"
        return f"ack wait {self.ack_wait:g}s, backOff [{backoff}], maxDeliver {limit}"
