"""The license ids a Hugging Face dataset card's `license:` takes (hub-docs, docs/hub/repositories-licenses.md).

A mixture's card declares its sources' licenses there, so the Hub shows them and its license filter finds the
mixture; a name outside this list is declared as `other` (the table in the card names it).
"""

from __future__ import annotations

# fmt: off
HUB_LICENSES = frozenset([
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "gemma", "unknown", "other",
])
# fmt: on


def card_licenses(licenses: list[str]) -> list[str]:
    """The card's license ids for these sources' licenses: an evolved source's is its seeds' (before the `;`
    that adds the teacher's terms), a hub card's list is each of its ids, and a name the Hub does not know is
    `other`."""
    ids = set()
    for text in licenses:
        for part in text.split(";", 1)[0].split(","):
            name = part.strip().lower()
            ids.add(name if name in HUB_LICENSES else "other")
    return sorted(ids) or ["unknown"]
