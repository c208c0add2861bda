"""jsnb: the Dapr ``pubsub.jetstream`` component for notebooks.

>>> import jsnb
>>> jsnb.Metadata.from_properties({"natsURL": "embedded"}).embedded
True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from jsnb.advisories import Advisories, Advisory, AdvisoryKind, capture_advisories
from jsnb.errors import (
    ArgumentTypeError,
    ComponentClosedError,
    ConnectError,
    ConsumerConflictError,
    ConsumerLimitError,
    ConsumerNotFoundError,
    InvalidArgumentError,
    JsnbError,
    LoopNotRunningError,
    MessageNotFoundError,
    MetadataError,
    NoLeaderError,
    PayloadTooLargeError,
    ServerError,
    StreamNotFoundError,
    StreamUnavailableError,
    WaitTimeoutError,
)
from jsnb.explorer import (
    StoredMessage,
    acked_by,
    browse_stream,
    consumer_report,
    pause_consumer,
    read_message,
    reset_consumer,
    resume_consumer,
)
from jsnb.messages import (
    BulkMessageEntry,
    BulkPublishFailure,
    BulkPublishResponse,
    Delivery,
    DeliveryEvent,
    Feature,
    Message,
    Outcome,
    PublishResult,
)
from jsnb.metadata import AckPolicy, ConcurrencyMode, ConsumerMode, DeliverPolicy, Metadata
from jsnb.pubsub import JetStreamPubSub, Lifecycle
from jsnb.streams import ensure_stream
from jsnb.subscription import Subscription
from jsnb.waiting import until

try:
    __version__ = version("jsnb")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "AckPolicy",
    "Advisories",
    "Advisory",
    "AdvisoryKind",
    "ArgumentTypeError",
    "BulkMessageEntry",
    "BulkPublishFailure",
    "BulkPublishResponse",
    "ComponentClosedError",
    "ConcurrencyMode",
    "ConnectError",
    "ConsumerConflictError",
    "ConsumerLimitError",
    "ConsumerMode",
    "ConsumerNotFoundError",
    "DeliverPolicy",
    "Delivery",
    "DeliveryEvent",
    "Feature",
    "InvalidArgumentError",
    "JetStreamPubSub",
    "JsnbError",
    "Lifecycle",
    "LoopNotRunningError",
    "Message",
    "MessageNotFoundError",
    "Metadata",
    "MetadataError",
    "NoLeaderError",
    "Outcome",
    "PayloadTooLargeError",
    "PublishResult",
    "ServerError",
    "StoredMessage",
    "StreamNotFoundError",
    "StreamUnavailableError",
    "Subscription",
    "WaitTimeoutError",
    "__version__",
    "acked_by",
    "browse_stream",
    "capture_advisories",
    "consumer_report",
    "ensure_stream",
    "pause_consumer",
    "read_message",
    "reset_consumer",
    "resume_consumer",
    "until",
]
