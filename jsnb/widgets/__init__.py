"""Notebook widgets over the core: forms, live tables, state views, explorers, the lab.

>>> from jsnb.widgets import ConfigForm
>>> ConfigForm({"natsURL": "embedded"}).metadata.embedded
True
"""

from __future__ import annotations

from jsnb.widgets.advisory_feed import AdvisoryFeed
from jsnb.widgets.config_form import ConfigForm
from jsnb.widgets.consumer_actions import ConsumerActions
from jsnb.widgets.consumer_state import ConsumerState, StreamState
from jsnb.widgets.redelivery_lab import RedeliveryLab
from jsnb.widgets.message_table import MessageTable
from jsnb.widgets.stream_browser import StreamBrowser

__all__ = [
    "AdvisoryFeed",
    "ConfigForm",
    "ConsumerActions",
    "ConsumerState",
    "MessageTable",
    "RedeliveryLab",
    "StreamBrowser",
    "StreamState",
]
