"""The generation page's HTTP server: one model, requests served by threads, generation serialised by a lock.

Routes:
  GET  /                    the page (audiodiff/web/index.html: inline CSS and JavaScript, no external files)
  GET  /api/info            the model's defaults and limits, JSON
  POST /api/generate        JSON {"prompt", optional "negative_prompt", "duration", "steps", "guidance", "seed",
                            "adapters": {name: strength} of the LoRA adapters the server loaded}:
                            numbers may be JSON numbers or the text typed into the page; blank = the model's default
                            (an adapter's default: the strength it was loaded with)
                            → {"id", "audio", "spectrogram", "filename", "meta"}
  GET  /audio/<id>.wav|png  a kept result (the last `keep`): 16-bit PCM WAV, or a PNG of its log-mel spectrogram
Errors are JSON {"error": message}: 400 for a bad request (the pipeline's own messages, a near copy the guard refused),
404 for an unknown path or a
result no longer kept, 413 for an oversized body, 500 for anything else (logged here with its traceback; the page
only gets a one-line summary).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from audiodiff.audio.image import spectrogram_image
from audiodiff.audio.io import write_tagged
from audiodiff.audio.mel import MelSpectrogram, log_compress
from audiodiff.generate import slug
from audiodiff.pipeline import AudioDiffusionPipeline, NearCopyRefused, describe
from audiodiff.pipeline.provenance import file_tags, provenance

log = logging.getLogger(__name__)

FIELDS = ("prompt", "negative_prompt", "duration", "steps", "guidance", "seed", "adapters")
MAX_SEED = 2**63 - 1
MAX_BODY = 64 * 1024  # bytes of a generate request
SPECTROGRAM_BANDS = 80
SPECTROGRAM_HOP_SECONDS = 0.01  # one image column per 10 ms
SPECTROGRAM_FLOOR = 1e-10  # power floor before the log (-100 dB)
_RESULT_PATH = re.compile(r"/audio/([0-9a-f]{16})\.(wav|png)")


class BadRequest(ValueError):
    """A request the page should correct; its message is shown as is."""


@dataclass(frozen=True)
class Request:
    """One generation request, parsed; None = the model's default."""

    prompt: str
    seed: int = 0
    negative_prompt: str | None = None
    adapters: tuple[tuple[str, float], ...] = ()  # (name, strength) asked for; others keep their default
    duration: float | None = None  # seconds
    steps: int | None = None
    guidance: float | None = None


@dataclass(frozen=True)
class Result:
    wav: bytes  # RIFF/WAVE, 16-bit PCM
    png: bytes  # log-mel spectrogram
    filename: str  # suggested download name
    meta: dict[str, Any]  # `audiodiff.pipeline.describe` plus the negative prompt


def _number(payload: dict[str, Any], name: str, kind: type[int] | type[float]) -> int | float | None:
    """payload[name] as a finite int / float: a JSON number or its text; missing, null or blank → None."""
    value = payload.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{name}: expected a number, got {value!r}")
    text = value.strip() if isinstance(value, str) else value
    if kind is int and isinstance(text, int):
        return text
    if kind is int and isinstance(text, str):
        try:
            return int(text)  # exact for long integers, which float() would round
        except ValueError:
            pass
    try:
        number = float(text)
    except ValueError:
        raise BadRequest(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{name}: expected a finite number, got {value!r}")
    if kind is int:
        if not number.is_integer():
            raise BadRequest(f"{name}: expected a whole number, got {value!r}")
        return int(number)
    return number


def _text(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name}: expected text, got {value!r}")
    return value


def parse_request(payload: Any) -> Request:
    """A decoded JSON body → Request; raises BadRequest naming the field for a wrong type or an unknown field.
    Values the model judges (empty prompt, duration, steps, guidance) are checked by `Studio.generate`."""
    if not isinstance(payload, dict):
        raise BadRequest(f"request body: expected a JSON object with fields {list(FIELDS)}, "
                         f"got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; expected some of {list(FIELDS)}")
    seed = _number(payload, "seed", int)
    seed = 0 if seed is None else seed
    if not 0 <= seed <= MAX_SEED:
        raise BadRequest(f"seed: expected a whole number from 0 to {MAX_SEED}, got {seed}")
    negative = _text(payload, "negative_prompt")
    adapters = payload.get("adapters") or {}
    if not isinstance(adapters, dict):
        raise BadRequest(f"adapters: expected an object of adapter names and strengths, got {adapters!r}")
    strengths = tuple((str(name), _number({f"adapters.{name}": value}, f"adapters.{name}", float))
                      for name, value in adapters.items())
    return Request(prompt=_text(payload, "prompt") or "", seed=seed,
                   negative_prompt=negative if negative and negative.strip() else None,
                   duration=_number(payload, "duration", float), steps=_number(payload, "steps", int),
                   guidance=_number(payload, "guidance", float),
                   adapters=tuple((name, value) for name, value in strengths if value is not None))


SPECTROGRAM_GAP = 2  # pixels between the channels of a multichannel clip


def display_mel(sample_rate: int) -> MelSpectrogram:
    """The spectrogram shown on the page, the same for every representation: power mel with 80 Slaney bands,
    a ~50 ms Hann window (a power of two) and a 10 ms hop; zero padding so clips of any length work."""
    n_fft = 2 ** round(math.log2(sample_rate * 0.05))
    return MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=max(1, round(sample_rate * SPECTROGRAM_HOP_SECONDS)),
                          n_mels=SPECTROGRAM_BANDS, pad_mode="constant")


def spectrogram_png(wav: Tensor, sample_rate: int) -> bytes:
    """wav [C, T] at sample_rate Hz → PNG bytes: `spectrogram_image` of each channel's natural-log mel, stacked
    top to bottom (channel 0, the left, on top; a 2-pixel black line between), each [2·80 pixels high, one column
    per 10 ms], low frequencies at the bottom, the top 80 dB of that channel coloured."""
    mel = display_mel(sample_rate)
    images = [spectrogram_image(log_compress(mel(channel.float()), floor=SPECTROGRAM_FLOOR)) for channel in wav]
    gap = np.zeros((SPECTROGRAM_GAP, images[0].shape[1], 3), dtype=images[0].dtype)
    rows = [part for image in images for part in (gap, image)][1:]
    out = io.BytesIO()
    Image.fromarray(np.concatenate(rows, axis=0)).save(out, format="PNG")
    return out.getvalue()


def wav_bytes(wav: Tensor, sample_rate: int, tags: dict[str, str] | None = None) -> bytes:
    """wav [C, T] float at sample_rate Hz → a 16-bit PCM WAV file's bytes (samples clipped to [-1, 1]), with
    metadata `tags` in its LIST/INFO chunk (`audiodiff.audio.io.TAGS`)."""
    out = io.BytesIO()
    write_tagged(out, wav.clamp(-1.0, 1.0).T.numpy(), sample_rate, "WAV", "PCM_16", tags)
    return out.getvalue()


class Studio:
    """Generation behind the page: validates requests with the pipeline's own checks, generates one clip at a time
    and keeps the last `keep` results in memory."""

    def __init__(self, pipe: AudioDiffusionPipeline, keep: int = 16) -> None:
        if keep < 1:
            raise ValueError(f"keep: expected at least 1 result to keep, got {keep}")
        self.pipe = pipe
        self.keep = keep
        self._generate_lock = threading.Lock()
        self._results_lock = threading.Lock()
        self._results: OrderedDict[str, Result] = OrderedDict()
        self.adapter_defaults = dict(pipe.adapters)  # the strengths adapters were loaded with

    def info(self) -> dict[str, Any]:
        """The model's defaults and limits, for the page's fields."""
        model = self.pipe.model
        return {"model": self.pipe.model_id, "sample_rate": self.pipe.sample_rate, "duration": model.duration,
                "max_duration": model.max_duration, "steps": model.sampler.steps,
                "guidance": model.sampler.guidance, "sampler": model.sampler.name, "keep": self.keep,
                "adapters": [{"name": name, "strength": strength, "source": self.pipe.adapter_sources.get(name, "")}
                             for name, strength in self.adapter_defaults.items()]}

    def generate(self, payload: Any) -> dict[str, Any]:
        """Parse, check and generate one clip; returns its id, URLs, download name and sidecar metadata.
        Raises BadRequest (with the pipeline's message) before any work when the request is wrong."""
        request = parse_request(payload)
        negatives = None if request.negative_prompt is None else [request.negative_prompt]
        try:
            settings = self.pipe.settings(request.steps, request.guidance)
            duration = self.pipe.check_request([request.prompt], request.duration, negatives)
        except ValueError as err:
            raise BadRequest(str(err)) from None
        unknown = sorted(name for name, _ in request.adapters if name not in self.adapter_defaults)
        if unknown:
            raise BadRequest(f"adapters: {unknown} are not loaded; loaded: {sorted(self.adapter_defaults)}")
        strengths = {**self.adapter_defaults, **dict(request.adapters)}
        with self._generate_lock:
            for name, strength in strengths.items():
                self.pipe.set_adapter_strength(name, strength)
            try:
                out = self.pipe(request.prompt, duration=duration, steps=settings.steps, guidance=settings.guidance,
                                seed=request.seed, negative_prompts=negatives)
            except NearCopyRefused as err:  # the near-copy guard's refusal names the training clip
                raise BadRequest(str(err)) from None
        wav = out.audio[0]
        if not torch.isfinite(wav).all():
            raise RuntimeError("the model produced NaN or infinite samples")
        meta = describe(out, request.prompt, 0, self.pipe.model_id)
        if request.negative_prompt is not None:
            meta["negative_prompt"] = request.negative_prompt
        if strengths:
            meta["adapters"] = {self.pipe.adapter_sources.get(name, name): value for name, value in strengths.items()}
        meta.update(provenance(self.pipe.base_hash))
        result = Result(wav_bytes(wav, out.sample_rate, file_tags(meta)), spectrogram_png(wav, out.sample_rate),
                        f"{slug(request.prompt)}_seed{request.seed}.wav", meta)
        key = secrets.token_hex(8)
        with self._results_lock:
            self._results[key] = result
            while len(self._results) > self.keep:
                self._results.popitem(last=False)
        return {"id": key, "audio": f"/audio/{key}.wav", "spectrogram": f"/audio/{key}.png",
                "filename": result.filename, "meta": meta}

    def result(self, key: str) -> Result | None:
        with self._results_lock:
            return self._results.get(key)


class StudioServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` serving a Studio; `port=0` picks a free port (see `url`)."""

    daemon_threads = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 7860) -> None:
        self.studio = studio
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: StudioServer
    server_version = "audiodiff"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.server.studio.info())
        elif match := _RESULT_PATH.fullmatch(path):
            result = self.server.studio.result(match[1])
            if result is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"{path}: no such result (only the last "
                                                           f"{self.server.studio.keep} are kept)"})
            elif match[2] == "wav":
                self._send(HTTPStatus.OK, result.wav, "audio/wav",
                           {"Content-Disposition": f'inline; filename="{result.filename}"'})
            else:
                self._send(HTTPStatus.OK, result.png, "image/png")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{path}: not found"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path != "/api/generate":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{path}: not found (POST /api/generate)"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is not read
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": f"request body: expected at most {MAX_BODY} bytes, got Content-Length "
                                 f"{self.headers.get('Content-Length')!r}"})
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"request body: not valid JSON ({err})"})
            return
        try:
            self._json(HTTPStatus.OK, self.server.studio.generate(payload))
        except BadRequest as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except Exception as err:  # a failure of the model or the server, not of the request
            log.exception("generation failed for %r", payload)
            summary = str(err).splitlines()[0][:200] if str(err) else ""
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": f"generation failed: {type(err).__name__}: {summary} (details in the server log)"})

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", {"Cache-Control": "no-store"})

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.info("%s %s", self.address_string(), format % args)


def _page() -> bytes:
    return files("audiodiff.web").joinpath("index.html").read_bytes()
