"""`${VAR}` and `${VAR:-default}` in recipe strings, filled from the environment."""

from __future__ import annotations

import os
import re

from mixer.errors import Diagnostic
from mixer.yamlpos import Located, Path_

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str) -> tuple[str, list[str]]:
    """`text` with its references filled, and the names of unset variables without a default (left as written)."""
    unset: list[str] = []

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        unset.append(name)
        return match.group(0)

    return ENV_REF.sub(substitute, text), unset


def unset_problems(located: Located, path: Path_, names: list[str]) -> list[Diagnostic]:
    """One error per unset variable, at the value that names it."""
    return [
        located.diag(
            path, f"environment variable {name} is not set", f"export {name}=... or write ${{{name}:-default}}"
        )
        for name in names
    ]
