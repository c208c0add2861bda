"""jsnb: the Dapr ``pubsub.jetstream`` component for notebooks.

>>> import jsnb
>>> jsnb.Metadata.from_properties({"natsURL": "embedded"}).embedded
True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from jsnb.errors import (
    ComponentClosedError,
    JsnbError,
    MetadataError,
    ServerError,
    StreamNotFoundError,
)
from jsnb.metadata import AckPolicy, ConcurrencyMode, DeliverPolicy, Metadata

try:
    __version__ = version("jsnb")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "AckPolicy",
    "ComponentClosedError",
    "ConcurrencyMode",
    "DeliverPolicy",
    "JsnbError",
    "Metadata",
    "MetadataError",
    "ServerError",
    "StreamNotFoundError",
    "__version__",
]
