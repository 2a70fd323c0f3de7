"""The generation web page: its HTTP API (urllib) against the pipeline called directly, and the page itself in
headless Chromium (Playwright), with a randomly initialised debug model saved and loaded as an export folder."""

import io
import json
import logging
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from debug_model import debug_export
from PIL import Image

from audiodiff.audio.image import spectrogram_image
from audiodiff.config import compose_config
from audiodiff.pipeline import AudioDiffusionPipeline, describe
from audiodiff.serve import build_server
from audiodiff.web.server import (
    SPECTROGRAM_BANDS,
    SPECTROGRAM_FLOOR,
    SPECTROGRAM_GAP,
    Studio,
    StudioServer,
    display_mel,
)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEEP = 3
# What the page sends: the text of its fields.
REQUEST = {"prompt": "two beeps", "duration": "0.5", "steps": "2", "guidance": "2.5", "seed": "7"}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return debug_export(tmp_path_factory.mktemp("model") / "export")


@pytest.fixture(scope="module")
def pipe(export) -> AudioDiffusionPipeline:
    return AudioDiffusionPipeline.from_pretrained(export)


@pytest.fixture(scope="module")
def server(pipe):
    srv = StudioServer(Studio(pipe, keep=KEEP), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def call(server: StudioServer, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of GET `path`, or POST of `body` as JSON (or `raw` bytes)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with _opener.open(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def error_of(status_and_body: tuple[int, dict, bytes]) -> tuple[int, str]:
    status, headers, body = status_and_body
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)["error"]


def pipeline_message(call_it) -> str:
    with pytest.raises(ValueError) as info:
        call_it()
    return str(info.value)


@pytest.fixture(scope="module")
def generated(server):
    status, _, body = call(server, "/api/generate", REQUEST)
    assert status == 200, body
    return json.loads(body)


def test_info_reports_the_models_defaults_and_limits(server, pipe):
    status, headers, body = call(server, "/api/info")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"model": str(pipe.model_id), "sample_rate": 16000, "duration": 1.0,
                                "max_duration": 30.0, "steps": 3, "guidance": 3.0, "sampler": "flow_heun",
                                "keep": KEEP, "adapters": []}


def test_generate_serves_the_pipelines_audio_as_a_16_bit_wav(server, pipe, generated):
    reference = pipe("two beeps", duration=0.5, steps=2, guidance=2.5, seed=7)
    assert generated["audio"] == f"/audio/{generated['id']}.wav"
    assert generated["filename"] == "two_beeps_seed7.wav"
    meta = dict(generated["meta"])
    provenance = {key: meta.pop(key) for key in ("model_hash", "audiodiff_version", "created")}
    assert meta == describe(reference, "two beeps", 0, pipe.model_id)
    assert provenance["model_hash"] == pipe.base_hash and provenance["created"].endswith("+00:00")
    status, headers, body = call(server, generated["audio"])
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    with sf.SoundFile(io.BytesIO(body)) as clip:  # the file says how it was made, without its sidecar
        tags = clip.copy_metadata()
    assert tags["title"] == "two beeps" and tags["software"].startswith("audiodiff ")
    record = json.loads(tags["comment"])
    assert record["seed"] == 7 and record["model_hash"] == pipe.base_hash and record["prompt"] == "two beeps"
    info = sf.info(io.BytesIO(body))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 8000, "PCM_16")
    samples, _ = sf.read(io.BytesIO(body), dtype="float64")
    expected = reference.audio[0, 0].double().clamp(-1, 1).numpy()
    np.testing.assert_allclose(samples, expected, atol=1.0 / 32767 + 1e-6)  # 16-bit quantisation
    assert np.abs(expected).max() > 1e-3  # not silence


def test_spectrogram_is_the_log_mel_of_the_clip(server, pipe, generated):
    status, headers, body = call(server, generated["spectrogram"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
    wav = pipe("two beeps", duration=0.5, steps=2, guidance=2.5, seed=7).audio[0, 0].double().numpy()
    mel = display_mel(16000)
    assert (mel.n_fft, mel.hop_length) == (1024, 160)
    power = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=1024, hop_length=160, n_mels=SPECTROGRAM_BANDS,
                                           center=True, pad_mode="constant", power=2.0)
    expected = spectrogram_image(np.log(np.maximum(power, SPECTROGRAM_FLOOR))).astype(int)
    assert image.shape == expected.shape == (2 * SPECTROGRAM_BANDS, 1 + 8000 // 160, 3)
    assert np.abs(image - expected).max() <= 1  # float32 STFT vs librosa's float64, then rounding to uint8


def test_a_stereo_model_is_served_as_a_two_channel_wav_with_a_spectrogram_per_channel(tmp_path):
    stereo = AudioDiffusionPipeline.from_pretrained(debug_export(tmp_path / "export", ["data.channels=2"], seed=1))
    srv = StudioServer(Studio(stereo, keep=KEEP), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = call(srv, "/api/generate", REQUEST)
        assert status == 200, body
        result = json.loads(body)
        assert result["meta"]["channels"] == 2
        _, _, audio = call(srv, result["audio"])
        info = sf.info(io.BytesIO(audio))
        assert (info.samplerate, info.channels, info.frames) == (16000, 2, 8000)
        samples, _ = sf.read(io.BytesIO(audio), dtype="float64")
        reference = stereo("two beeps", duration=0.5, steps=2, guidance=2.5, seed=7).audio[0].double()
        np.testing.assert_allclose(samples.T, reference.clamp(-1, 1).numpy(), atol=1.0 / 32767 + 1e-6)
        _, _, png = call(srv, result["spectrogram"])
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert image.shape[0] == 2 * (2 * SPECTROGRAM_BANDS) + SPECTROGRAM_GAP  # left on top, a gap, right
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_negative_prompt_is_used_and_recorded(server, pipe):
    status, _, body = call(server, "/api/generate", {**REQUEST, "negative_prompt": "hiss", "seed": 3})
    assert status == 200
    meta = json.loads(body)["meta"]
    assert meta["negative_prompt"] == "hiss" and meta["seed"] == 3
    samples, _ = sf.read(io.BytesIO(call(server, json.loads(body)["audio"])[2]), dtype="float64")
    expected = pipe("two beeps", duration=0.5, steps=2, guidance=2.5, seed=3, negative_prompts="hiss").audio
    plain = pipe("two beeps", duration=0.5, steps=2, guidance=2.5, seed=3).audio
    np.testing.assert_allclose(samples, expected[0, 0].clamp(-1, 1).numpy(), atol=1.0 / 32767 + 1e-6)
    assert np.abs(samples - plain[0, 0].numpy()).max() > 10.0 / 32767


@pytest.mark.parametrize("change, message", [
    ({"prompt": "  "}, lambda p: pipeline_message(lambda: p.check_request(["  "], None, None))),
    ({"duration": "1000"}, lambda p: pipeline_message(lambda: p.check_request(["a"], 1000.0, None))),
    ({"duration": "-1"}, lambda p: pipeline_message(lambda: p.check_request(["a"], -1.0, None))),
    ({"steps": "0"}, lambda p: pipeline_message(lambda: p.settings(steps=0))),
    ({"guidance": 99}, lambda p: pipeline_message(lambda: p.settings(guidance=99.0))),
    ({"seed": "abc"}, "seed: expected a number, got 'abc'"),
    ({"seed": "1.5"}, "seed: expected a whole number, got '1.5'"),
    ({"seed": -1}, "seed: expected a whole number from 0 to 9223372036854775807, got -1"),
    ({"steps": True}, "steps: expected a number, got True"),
    ({"duration": "inf"}, "duration: expected a finite number, got 'inf'"),
    ({"prompt": 5}, "prompt: expected text, got 5"),
    ({"sampler": "ddim"}, "unknown field(s) ['sampler']; expected some of ['prompt', 'negative_prompt', "
                          "'duration', 'steps', 'guidance', 'seed', 'adapters']"),
])
def test_bad_requests_get_400_with_the_message(server, pipe, change, message):
    expected = message(pipe) if callable(message) else message
    assert error_of(call(server, "/api/generate", {**REQUEST, **change})) == (400, expected)


def test_bodies_that_are_not_a_json_object_get_400_or_413(server):
    status, text = error_of(call(server, "/api/generate", raw=b"{not json"))
    assert status == 400 and text.startswith("request body: not valid JSON")
    assert error_of(call(server, "/api/generate", ["two beeps"])) == (
        400, "request body: expected a JSON object with fields ['prompt', 'negative_prompt', 'duration', 'steps', "
             "'guidance', 'seed', 'adapters'], got list")
    status, text = error_of(call(server, "/api/generate", raw=b" " * (64 * 1024 + 1)))
    assert status == 413 and "at most 65536 bytes" in text


def test_unknown_paths_and_ids_get_404_and_old_results_are_dropped(server):
    assert error_of(call(server, "/nothing/here")) == (404, "/nothing/here: not found")
    assert error_of(call(server, "/audio/0123456789abcdef.wav"))[0] == 404
    assert error_of(call(server, "/api/info", REQUEST)) == (404, "/api/info: not found (POST /api/generate)")
    ids = [json.loads(call(server, "/api/generate", {"prompt": f"beep {i}", "duration": 0.1, "steps": 1})[2])["id"]
           for i in range(KEEP + 1)]
    status, text = error_of(call(server, f"/audio/{ids[0]}.png"))
    assert (status, text) == (404, f"/audio/{ids[0]}.png: no such result (only the last {KEEP} are kept)")
    assert all(call(server, f"/audio/{i}.wav")[0] == 200 for i in ids[1:])


def test_a_failing_model_gives_500_with_a_summary_and_the_server_goes_on(server, pipe, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr(pipe.model, "generate", broken)
    with caplog.at_level(logging.ERROR, logger="audiodiff.web.server"):
        status, text = error_of(call(server, "/api/generate", REQUEST))
    assert (status, text) == (500, "generation failed: RuntimeError: out of memory (details in the server log)")
    assert any(r.exc_info and "out of memory" in str(r.exc_info[1]) for r in caplog.records)  # traceback logged
    monkeypatch.undo()
    assert call(server, "/api/generate", REQUEST)[0] == 200


def test_entry_point_config_builds_a_server(export):
    cfg = compose_config("serve", [f"model={export}", "port=0", "keep=2"])
    srv = build_server(cfg)
    try:
        assert srv.url.startswith("http://127.0.0.1:") and srv.studio.keep == 2
        assert srv.studio.pipe.model_id == str(export)
    finally:
        srv.server_close()
    with pytest.raises(ValueError, match=r"model: expected an export folder, run directory or \.ckpt"):
        build_server(compose_config("serve"))


# --- the page in headless Chromium -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_function("document.body.dataset.ready === '1'")
    yield page
    context.close()


def fill(page, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        page.fill(f"#{name}", value)


# Waits until the first result's audio can play and its spectrogram has loaded, plays the audio (muted) to its end,
# then fetches the audio as the page sees it.
_INSPECT = """async () => {
  const audio = document.querySelector('#results audio');
  const image = document.querySelector('#results img');
  const waitFor = (el, ok, ready, failed) => new Promise((resolve, reject) => {
    const fail = () => reject(new Error(`${el.tagName} failed to load ${el.src}`));
    if (ready()) return resolve();
    if (failed()) return fail();
    el.addEventListener(ok, resolve, {once: true});
    el.addEventListener('error', fail, {once: true});
    setTimeout(() => reject(new Error(`${el.tagName}: no '${ok}' event within 20 s`)), 20000);
  });
  await waitFor(audio, 'canplay', () => audio.readyState >= 3, () => audio.error !== null);
  await waitFor(image, 'load', () => image.complete && image.naturalWidth > 0,
                () => image.complete && image.naturalWidth === 0);
  audio.muted = true;  // play it through to the end (muted: no sound device needed)
  await audio.play();
  await waitFor(audio, 'ended', () => audio.ended, () => audio.error !== null);
  const bytes = new Uint8Array(await (await fetch(audio.src)).arrayBuffer());
  const text = (a, b) => String.fromCharCode(...bytes.slice(a, b));
  const link = document.querySelector('#results a[download]');
  return {duration: audio.duration, played: audio.played.end(audio.played.length - 1), src: audio.src,
          riff: text(0, 4), wave: text(8, 12), size: bytes.length,
          width: image.naturalWidth, height: image.naturalHeight, href: link.href,
          download: link.getAttribute('download'), meta: document.querySelector('#results .meta').textContent,
          errorHidden: document.getElementById('error').hidden};
}"""


def test_page_generates_playable_audio_with_spectrogram_and_download(page, server):
    assert [page.input_value(f"#{k}") for k in ("duration", "steps", "guidance", "seed")] == ["1", "3", "3", "0"]
    assert "16000 Hz" in page.inner_text("#model-info")
    fill(page, REQUEST)
    page.click("#generate")
    page.wait_for_selector("#results audio")
    seen = page.evaluate(_INSPECT)
    assert seen["duration"] == pytest.approx(0.5, abs=1e-3) and seen["played"] == pytest.approx(0.5, abs=1e-3)
    assert (seen["riff"], seen["wave"]) == ("RIFF", "WAVE")
    assert seen["size"] > 44 + 2 * 8000  # the samples, and the LIST/INFO chunk saying how they were made
    assert (seen["width"], seen["height"]) == (1 + 8000 // 160, 2 * SPECTROGRAM_BANDS)
    assert seen["href"] == seen["src"] and seen["src"].startswith(server.url + "audio/")
    assert seen["src"].endswith(".wav") and seen["download"] == "two_beeps_seed7.wav"
    assert "seed 7" in seen["meta"] and "2 steps" in seen["meta"] and "guidance 2.5" in seen["meta"]
    assert seen["errorHidden"]


def test_page_shows_bad_input_as_a_message_and_recovers(page, pipe):
    error = page.locator("#error")
    fill(page, {**REQUEST, "duration": "1000"})
    page.click("#generate")
    error.wait_for(state="visible")
    assert error.inner_text() == pipeline_message(lambda: pipe.check_request(["a"], 1000.0, None))
    fill(page, {"duration": "0.5", "seed": "abc"})
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent.startsWith('seed')")
    assert error.inner_text() == "seed: expected a number, got 'abc'"
    assert page.locator("#results .result").count() == 0 and "Traceback" not in page.content()
    fill(page, {"seed": "1"})
    page.press("#prompt", "Enter")
    page.wait_for_selector("#results audio")
    assert error.is_hidden()
