"""Notebook widgets over the core: forms, live tables and state views.

>>> from jsnb.widgets import ConfigForm
>>> ConfigForm({"natsURL": "embedded"}).metadata.embedded
True
"""

from __future__ import annotations

from jsnb.widgets.config_form import ConfigForm

__all__ = ["ConfigForm"]
