"""Source format adapters: native records → canonical rows (see DESIGN.md, "Canonical row").

What a format accepts is plain data in `formats` (validation needs nothing more); each adapter module defines
`ADAPTER`, that format plus its polars conversion, imported on first use so `import mixer` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from mixer.adapters.formats import SPECS, Format

if TYPE_CHECKING:
    from mixer.adapters.base import Adapter

FORMATS: tuple[str, ...] = tuple(SPECS)


def format_spec(fmt: str) -> Format:
    return SPECS[fmt]


def get_adapter(fmt: str) -> Adapter:
    if fmt not in FORMATS:
        raise KeyError(fmt)
    return importlib.import_module(f"mixer.adapters.{fmt}").ADAPTER
