"""What an output records about how it was made: the sidecar's provenance fields and the same record inside the
audio file's own metadata (WAV LIST/INFO, FLAC Vorbis comments), so a file that travels without its sidecar still
says which model, prompt, seed and settings made it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from audiodiff import __version__
from audiodiff.audio.io import MAX_TAG_CHARS

# sidecar fields copied into the file's comment tag, in this order; the first ones are kept if it is too long
FILE_FIELDS = ("model", "model_hash", "prompt", "negative_prompt", "seed", "watermark", "license_warning",
               "audiodiff_version", "created", "sampler_settings")


def provenance(model_hash: str) -> dict[str, str]:
    """The sidecar fields beyond the request: the denoiser's content hash (adapters not counted), the audiodiff
    version and the UTC time of writing (ISO 8601, seconds)."""
    return {"model_hash": model_hash, "audiodiff_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


def file_tags(sidecar: dict[str, Any]) -> dict[str, str]:
    """Metadata strings for the audio file of `sidecar`: title (the prompt), software, date and a comment holding
    the provenance fields (`FILE_FIELDS`) as compact JSON, cut to fit the format's room by dropping the last
    fields first."""
    record = {key: sidecar[key] for key in FILE_FIELDS if key in sidecar}
    comment = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    while len(comment) > MAX_TAG_CHARS and len(record) > 1:
        record.popitem()
        comment = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    tags = {"title": str(sidecar.get("prompt", ""))[:MAX_TAG_CHARS], "software": f"audiodiff {__version__}",
            "comment": comment[:MAX_TAG_CHARS]}
    if "created" in sidecar:
        tags["date"] = str(sidecar["created"])
    return tags
