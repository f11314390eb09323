"""mixer: a declarative dataset mixer and recipe compiler for instruction tuning."""

__version__ = "0.1.0"
