"""jsnb's small error tree: every error jsnb raises itself derives from JsnbError.

```
JsnbError
 +-- MetadataError (also ValueError)             bad or missing component property
 +-- InvalidArgumentError (also ValueError)      a call's argument is out of range or malformed
 +-- ArgumentTypeError (also TypeError)          a call's argument is of the wrong kind
 +-- ConsumerConflictError (also ValueError)     a durable's settings cannot change in place
 +-- ConsumerLimitError (also RuntimeError)      the stream holds as many consumers as allowed
 +-- ComponentClosedError                        the component was used after close()
 +-- LoopNotRunningError (also RuntimeError)     no event loop to run on (sync facade, polls)
 +-- WaitTimeoutError (also TimeoutError)        jsnb.until's condition was not met in time
 +-- ServerError                                 the embedded nats-server failed
 +-- ConnectError (also ConnectionError)         no server, refused credentials, no JetStream
 +-- StreamNotFoundError (also LookupError)      no JetStream stream covers a subject
 +-- ConsumerNotFoundError (also LookupError)    a named consumer is not on its stream
 +-- MessageNotFoundError (also LookupError)     a stream holds no message at that sequence
 +-- StreamUnavailableError (ConnectionError)    a stream exists but nobody answered
 |    +-- NoLeaderError                          the cluster is still electing a leader
 +-- PayloadTooLargeError (also ValueError)      the message exceeds max_payload
```

Each also derives from the builtin a caller would catch without knowing jsnb
(``except ValueError`` still works). Errors raised by nats-py are passed
through where they already say the right thing; jsnb adds context where a raw
server error would puzzle a user. ``Metadata`` is a ``Mapping``, so a missing
key there is a plain ``KeyError``, as the protocol says. The JetStream API
error codes jsnb reads are named below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "MAXIMUM_CONSUMERS",
    "NO_MESSAGE_FOUND",
    "STREAM_NAME_IN_USE",
    "ArgumentTypeError",
    "ComponentClosedError",
    "ConnectError",
    "ConsumerConflictError",
    "ConsumerLimitError",
    "ConsumerNotFoundError",
    "InvalidArgumentError",
    "JsnbError",
    "LoopNotRunningError",
    "MessageNotFoundError",
    "MetadataError",
    "NoLeaderError",
    "PayloadTooLargeError",
    "ServerError",
    "StreamNotFoundError",
    "StreamUnavailableError",
    "WaitTimeoutError",
]


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


class InvalidArgumentError(JsnbError, ValueError):
    """An argument of a jsnb call is out of range or malformed; the message says what fits."""


class ArgumentTypeError(JsnbError, TypeError):
    """An argument of a jsnb call is of the wrong kind (a handler that is not callable)."""


class ConsumerConflictError(JsnbError, ValueError):
    """A durable consumer exists with settings that cannot be changed in place."""


class ConsumerLimitError(JsnbError, RuntimeError):
    """The stream (or account) holds as many consumers as the server allows."""


class ComponentClosedError(JsnbError):
    """The component was used after ``close()``."""


class LoopNotRunningError(JsnbError, RuntimeError):
    """The event loop a call needs is not running (closed, or none in this thread)."""


class WaitTimeoutError(JsnbError, TimeoutError):
    """:func:`jsnb.until`'s condition was still false at its deadline."""


class ServerError(JsnbError):
    """The embedded nats-server failed to start, or died."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(f"{message}\n--- nats-server log ---\n{log}" if log else message)
        self.log = log


class ConnectError(JsnbError, ConnectionError):
    """The server could not be reached, refused our credentials, or lacks JetStream."""


class StreamNotFoundError(JsnbError, LookupError):
    """No JetStream stream captures the subject; streams are never auto-created."""


class ConsumerNotFoundError(JsnbError, LookupError):
    """A consumer named by the caller does not exist on its stream."""


class MessageNotFoundError(JsnbError, LookupError):
    """A stream holds no message at the sequence asked for (never stored, deleted, expired)."""


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


# JetStream API error codes (``err_code``) jsnb acts on.
STREAM_NAME_IN_USE = 10058  # "stream name already in use with a different configuration"
MAXIMUM_CONSUMERS = 10026  # "maximum consumers limit reached" (stream or account)
NO_MESSAGE_FOUND = 10037  # a message get found nothing at or after the sequence
