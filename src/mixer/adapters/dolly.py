"""Dolly format: instruction / context / response / category (databricks-dolly-15k). Alpaca's records under
other names (context for input, response for output), read by Alpaca's conversion, so one prompt reads the
same in either format."""

from __future__ import annotations

from functools import partial

from mixer.adapters.alpaca import convert
from mixer.adapters.base import adapter

ADAPTER = adapter("dolly", partial(convert, extra="context", reply="response"))
