"""An optional C2PA manifest (Content Credentials) signed into a generated WAV file with the user's certificate
and key, through the `c2pa-python` package (`pip install c2pa-python`), used only when asked for and installed.

The manifest states that the audio was created by a trained algorithm (IPTC digital source type
`trainedAlgorithmicMedia`) with audiodiff, and carries the sidecar's provenance record as an
`org.audiodiff.generation` assertion.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from audiodiff import __version__
from audiodiff.pipeline.provenance import FILE_FIELDS

ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
TRAINED_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {".wav": "audio/wav"}


class ProvenanceError(ValueError):
    """A C2PA request that cannot be met (package missing, keys unreadable, unsupported file)."""


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise ProvenanceError("c2pa_cert / c2pa_key: signing a C2PA manifest needs the c2pa-python package "
                              "(pip install c2pa-python)") from None
    return c2pa


def check_signing(cert: str | Path, key: str | Path, alg: str = "es256") -> tuple[bytes, bytes]:
    """The PEM certificate chain and private key, read and checked before anything is generated; ProvenanceError
    naming what is missing."""
    _c2pa()
    if alg not in ALGORITHMS:
        raise ProvenanceError(f"c2pa_alg: expected one of {list(ALGORITHMS)}, got {alg!r}")
    out = []
    for name, path in (("c2pa_cert", cert), ("c2pa_key", key)):
        path = Path(path)
        if not path.is_file():
            raise ProvenanceError(f"{name}: {path} does not exist")
        data = path.read_bytes()
        if b"-----BEGIN" not in data:
            raise ProvenanceError(f"{name}: {path} is not a PEM file")
        out.append(data)
    return out[0], out[1]


def manifest(sidecar: dict[str, Any], title: str) -> dict[str, Any]:
    """The C2PA manifest definition of one generated clip."""
    record = {key: sidecar[key] for key in FILE_FIELDS if key in sidecar}
    return {"claim_generator_info": [{"name": "audiodiff", "version": __version__}], "title": title,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": TRAINED_MEDIA,
                     "softwareAgent": {"name": "audiodiff", "version": __version__}}]}},
                {"label": "org.audiodiff.generation", "data": record}]}


def sign_file(path: str | Path, sidecar: dict[str, Any], cert: bytes, key: bytes, alg: str = "es256",
              tsa_url: str | None = None) -> Path:
    """Sign `manifest(sidecar)` into the WAV file `path` in place (written to a temporary file and renamed)."""
    c2pa = _c2pa()
    path = Path(path)
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ProvenanceError(f"{path}: C2PA manifests are written into {sorted(MIME)} files here (format=wav)")
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg.encode(), cert, key,
                                                       tsa_url.encode() if tsa_url else None))
    builder = c2pa.Builder.from_json(json.dumps(manifest(sidecar, path.name)))
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(path, "rb") as source, os.fdopen(fd, "w+b") as dest:
            builder.sign(signer, mime, source, dest)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
