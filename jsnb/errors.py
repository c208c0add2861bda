"""jsnb's small error tree.

```
JsnbError
 +-- MetadataError (also ValueError)             bad or missing component property
 +-- ComponentClosedError                        the component was used after close()
 +-- ServerError                                 the embedded nats-server failed
 +-- StreamNotFoundError (also LookupError)      no JetStream stream covers a subject
 +-- ConsumerNotFoundError (also LookupError)    a named consumer is not on its stream
 +-- StreamUnavailableError (ConnectionError)    a stream exists but nobody answered
 |    +-- NoLeaderError                          the cluster is still electing a leader
 +-- PayloadTooLargeError (also ValueError)      the message exceeds max_payload
```

Errors raised by nats-py are passed through where they already say the
right thing; jsnb adds context where a raw server error would puzzle a user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class JsnbError(Exception):
    """Base class of every error jsnb raises itself."""


class MetadataError(JsnbError, ValueError):
    """A component property is missing, malformed or contradicts another.

    The message names the Dapr key, shows the bad value (never a secret) and
    says what is allowed. One error can carry several problems, as a linter
    reports a whole file: ``problems`` holds ``(key, message)`` pairs, one per
    line of the message, and ``key`` is the first problem's key.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        problems: Sequence[tuple[str | None, str]] = (),
    ) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[str | None, str], ...] = tuple(problems) or ((key, message),)
        self.key = self.problems[0][0]

    @classmethod
    def collect(
        cls, problems: Iterable[tuple[str | None, str]], *, where: str = ""
    ) -> MetadataError:
        """One error listing *problems*; *where* (a file name) opens the message."""
        found = tuple(problems)
        prefix = f"jsnb: {where}: " if where else "jsnb: "
        if len(found) == 1:
            key, message = found[0]
            return cls(prefix + message.removeprefix("jsnb: "), key=key)
        lines = "".join(f"\n- {message.removeprefix('jsnb: ')}" for _, message in found)
        return cls(f"{prefix}{len(found)} problems:{lines}", problems=found)


class ComponentClosedError(JsnbError):
    """The component was used after ``close()``."""


class ServerError(JsnbError):
    """The embedded nats-server failed to start, or died."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(f"{message}\n--- nats-server log ---\n{log}" if log else message)
        self.log = log


class StreamNotFoundError(JsnbError, LookupError):
    """No JetStream stream captures the subject; streams are never auto-created."""


class ConsumerNotFoundError(JsnbError, LookupError):
    """A consumer named by the caller does not exist on its stream."""


class StreamUnavailableError(JsnbError, ConnectionError):
    """A stream captures the subject but nobody answered: no leader, or its servers are down.

    Retriable: publish again with the same ``cloudevent.id`` and it is stored once.
    """


class NoLeaderError(StreamUnavailableError):
    """The JetStream API did not answer before a deadline: the cluster has no leader yet.

    A cluster drops or refuses JetStream requests while it elects a meta or
    stream leader; jsnb retries them until the deadline, then raises this.
    Retriable like its parent: a quorum of servers must be up to elect one.
    """


class PayloadTooLargeError(JsnbError, ValueError):
    """The encoded message (with its CloudEvent envelope) exceeds the server's max_payload."""
