"""Source format adapters: native records → canonical rows (see DESIGN.md, "Canonical row").

Each adapter module defines `ADAPTER`, an `Adapter` describing its fields and options. Modules are imported
on first use so `import mixer` stays cheap.
"""

from __future__ import annotations

import importlib

from mixer.adapters.base import Adapter

FORMATS: tuple[str, ...] = ("alpaca", "cot", "dolly", "flan", "messages", "oasst", "preference", "sharegpt", "turns")


def get_adapter(fmt: str) -> Adapter:
    if fmt not in FORMATS:
        raise KeyError(fmt)
    return importlib.import_module(f"mixer.adapters.{fmt}").ADAPTER
