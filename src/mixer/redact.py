"""Credentials a recipe's URLs may carry (a proxy's `user:password@`, a gateway's `?key=`), kept out of what
mixer writes and prints. `${VAR}` references are filled from the environment as a recipe is read, so a secret
exported for a `base_url` would otherwise land in the manifest's resolved recipe, next to the data it made."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
SECRET_PARAMETER = re.compile(r"key|token|secret|passw|sig|auth|credential", re.IGNORECASE)
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(text: str) -> str:
    """`text` with the user part and secret-looking query values of a URL in it hidden; anything that is not a
    URL with a host comes back as it was. The whole user part goes (some services take a token as the user)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAMETER.search(name) for name, _ in pairs):
            query = urlencode([(n, HIDDEN if SECRET_PARAMETER.search(n) else v) for n, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redacted(value: Any) -> Any:
    """`value` (a recipe document, a manifest part) with every URL in its strings redacted (`redact_url`)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redacted(item) for item in value]
    return value


def redact_urls_in(text: str) -> str:
    """Every URL inside a message (an HTTP library's error names the URL it called) redacted."""
    return URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
