"""The licences of the clips a model trained on: counted from the manifests' `license` field, and flagged where
they restrict use of the model's outputs (non-commercial) or say nothing (unknown)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal

from audiodiff.data.manifest import ManifestRow

UNKNOWN = "unknown"
LicenseKind = Literal["open", "noncommercial", "unknown"]
# SPDX-style identifiers (case-insensitive prefixes) whose terms allow commercial use of derived works
OPEN = ("cc0", "cc-by-4", "cc-by-3", "cc-by-2", "cc-by-sa", "cc-by-1", "cc-by", "public-domain", "pddl", "mit",
        "apache", "bsd", "odc-by", "odbl")
_NONCOMMERCIAL = re.compile(r"(^|[-_ ])nc([-_ ]|$)|non-?commercial|research[-_ ]only", re.IGNORECASE)


def license_kind(name: str | None) -> LicenseKind:
    """"noncommercial" for a licence with an NC term (CC-BY-NC-4.0, "non-commercial", "research only"), "open" for
    the identifiers in `OPEN` (CC0, CC-BY, CC-BY-SA, MIT, ...), "unknown" for anything else or nothing."""
    if not name or not name.strip() or name.strip().lower() == UNKNOWN:
        return "unknown"
    if _NONCOMMERCIAL.search(name):
        return "noncommercial"
    return "open" if name.strip().lower().startswith(OPEN) else "unknown"


def license_counts(rows: Iterable[ManifestRow]) -> dict[str, int]:
    """{licence: clips}, most frequent first; rows without a licence count as "unknown"."""
    counts = Counter((row.license or "").strip() or UNKNOWN for row in rows)
    return dict(counts.most_common())


def license_warning(counts: Mapping[str, int]) -> str | None:
    """One sentence naming the clips under non-commercial or unknown licences with their counts, or None when
    every clip's licence is open."""
    restricted = {name: n for name, n in counts.items() if license_kind(name) != "open"}
    if not restricted:
        return None
    total = sum(counts.values())
    listed = ", ".join(f"{name}: {n}" for name, n in restricted.items())
    return (f"trained on {sum(restricted.values())} of {total} clips under non-commercial or unknown licences "
            f"({listed}); check those terms before using this model's outputs commercially")
