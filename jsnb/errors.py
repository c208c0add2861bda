"""jsnb's small error tree.

```
JsnbError
 +-- MetadataError (also ValueError)             bad or missing component property
 +-- ComponentClosedError                        the component was used after close()
 +-- ServerError                                 the embedded nats-server failed
 +-- StreamNotFoundError (also LookupError)      no JetStream stream covers a subject
 +-- StreamUnavailableError (ConnectionError)    a stream exists but nobody answered
 |    +-- NoLeaderError                          the cluster is still electing a leader
 +-- PayloadTooLargeError (also ValueError)      the message exceeds max_payload
```

Errors raised by nats-py are passed through where they already say the
right thing; jsnb adds context where a raw server error would puzzle a user.
"""

from __future__ import annotations


class JsnbError(Exception):
    """Base class of every error jsnb raises itself."""


class MetadataError(JsnbError, ValueError):
    """A component property is missing, malformed or contradicts another.

    The message names the Dapr key, shows the bad value (never a secret) and
    says what is allowed.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ComponentClosedError(JsnbError):
    """The component was used after ``close()``."""


class ServerError(JsnbError):
    """The embedded nats-server failed to start, or died."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(f"{message}\n--- nats-server log ---\n{log}" if log else message)
        self.log = log


class StreamNotFoundError(JsnbError, LookupError):
    """No JetStream stream captures the subject; streams are never auto-created."""


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
