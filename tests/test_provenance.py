"""Provenance: training-data licences from manifests to the model card, the export warning and every output's
sidecar; the provenance record inside the audio file's own metadata."""

import json
import logging
from pathlib import Path

import pytest
import soundfile as sf
import torch
from debug_model import debug_model_parts

from audiodiff.audio.io import read_tags, save_audio
from audiodiff.config import compose_config
from audiodiff.data.licenses import license_counts, license_kind, license_warning
from audiodiff.data.manifest import ManifestRow
from audiodiff.models.export_format import write_export
from audiodiff.pipeline import AudioDiffusionPipeline, describe
from audiodiff.pipeline.provenance import file_tags
from audiodiff.training.checkpoints import license_card


@pytest.mark.parametrize("name, kind", [
    ("CC0-1.0", "open"), ("CC-BY-4.0", "open"), ("cc-by-sa-3.0", "open"), ("MIT", "open"),
    ("CC-BY-NC-4.0", "noncommercial"), ("CC-BY-NC-SA-3.0", "noncommercial"), ("non-commercial use", "noncommercial"),
    ("research only", "noncommercial"), (None, "unknown"), ("", "unknown"), ("unknown", "unknown"),
    ("All rights reserved", "unknown"),
])
def test_licences_are_sorted_into_open_noncommercial_and_unknown(name, kind):
    assert license_kind(name) == kind


def rows(*licences):
    return [ManifestRow(audio=Path(f"/a/{i}.wav"), captions=("x",), line=i + 1, license=name)
            for i, name in enumerate(licences)]


def test_counts_and_the_warning_name_each_restricted_licence():
    counts = license_counts(rows("CC0-1.0", "CC0-1.0", "CC-BY-NC-4.0", None, "CC0-1.0"))
    assert counts == {"CC0-1.0": 3, "CC-BY-NC-4.0": 1, "unknown": 1}
    assert license_warning(counts) == ("trained on 2 of 5 clips under non-commercial or unknown licences "
                                       "(CC-BY-NC-4.0: 1, unknown: 1); check those terms before using this model's "
                                       "outputs commercially")
    assert license_warning({"CC0-1.0": 10, "CC-BY-4.0": 2}) is None


@pytest.fixture(scope="module")
def model_parts():
    return debug_model_parts()


def test_the_card_lists_licences_and_outputs_carry_the_warning(model_parts, tmp_path, caplog):
    state, cfg = model_parts
    with caplog.at_level(logging.WARNING):
        card = license_card({"CC0-1.0": 40, "CC-BY-NC-4.0": 3, "unknown": 2})
    assert "export: this model was trained on 5 of 45 clips" in caplog.text
    folder = write_export(tmp_path / "export", state, cfg, card)
    text = (folder / "model_card.md").read_text()
    assert "## Training data licences" in text
    assert "- CC0-1.0: 40 clips\n- CC-BY-NC-4.0: 3 clips\n- unknown: 2 clips" in text
    assert "**Warning:** this model was trained on 5 of 45 clips under non-commercial or unknown licences" in text
    info = json.loads((folder / "export.json").read_text())
    assert info["licenses"] == {"CC0-1.0": 40, "CC-BY-NC-4.0": 3, "unknown": 2}
    pipe = AudioDiffusionPipeline.from_pretrained(folder, watermark=False)
    out = pipe("rain", duration=0.5, steps=1)
    meta = describe(out, "rain", 0, pipe.model_id)
    assert meta["license_warning"] == info["license_warning"] == pipe.license_warning


def test_an_open_licence_card_has_no_warning_and_unrecorded_licences_say_so(model_parts, tmp_path):
    state, cfg = model_parts
    folder = write_export(tmp_path / "open", state, cfg, license_card({"CC0-1.0": 12}))
    assert "- CC0-1.0: 12 clips" in (folder / "model_card.md").read_text()
    assert "Warning" not in (folder / "model_card.md").read_text()
    pipe = AudioDiffusionPipeline.from_pretrained(folder, watermark=False)
    assert "license_warning" not in describe(pipe("rain", duration=0.5, steps=1), "rain", 0, "m")
    bare = write_export(tmp_path / "bare", state, cfg, license_card(None))
    assert "Not recorded" in (bare / "model_card.md").read_text()


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_the_provenance_record_travels_inside_the_audio_file(tmp_path, suffix):
    sidecar = {"prompt": "three short high beeps", "negative_prompt": "hiss", "seed": 3, "model": "runs/x/export",
               "model_hash": "ab" * 32, "audiodiff_version": "0.2.0", "created": "2026-12-07T08:00:00+00:00",
               "watermark": {"method": "spectral", "key": "72dfb5faf0f7", "message": "abab"},
               "sampler_settings": {"name": "flow_heun", "steps": 25}, "duration": 1.0}
    path = save_audio(tmp_path / f"clip{suffix}", torch.zeros(1, 1600), 16000, tags=file_tags(sidecar))
    tags = read_tags(path)
    assert tags["title"] == "three short high beeps" and tags["date"] == "2026-12-07T08:00:00+00:00"
    assert tags["software"].startswith("audiodiff 0.2.0")
    record = json.loads(tags["comment"])
    assert record == {k: v for k, v in sidecar.items() if k != "duration"}
    assert sf.info(str(path)).frames == 1600


def test_a_long_record_drops_its_last_fields_and_bad_tags_are_named(tmp_path):
    sidecar = {"prompt": "p", "seed": 1, "sampler_settings": {"x": "y" * 5000}}
    assert json.loads(file_tags(sidecar)["comment"]) == {"prompt": "p", "seed": 1}
    with pytest.raises(ValueError, match="tag 'colour': expected one of"):
        save_audio(tmp_path / "a.wav", torch.zeros(1, 160), 16000, tags={"colour": "red"})
    assert not (tmp_path / "a.wav").exists()


def test_c2pa_signing_is_checked_before_anything_is_generated(model_parts, tmp_path):
    from audiodiff.generate import run
    from audiodiff.pipeline.c2pa_manifest import TRAINED_MEDIA, manifest

    state, cfg = model_parts
    folder = write_export(tmp_path / "export", state, cfg)
    out = tmp_path / "out"
    base = [f"model={folder}", "prompt=rain", "steps=1", "duration=0.25", f"out={out}"]
    with pytest.raises(ValueError, match="c2pa_cert and c2pa_key: give both"):
        run(compose_config("generate", [*base, f"c2pa_cert={tmp_path / 'cert.pem'}"]))
    with pytest.raises(ValueError, match="signed into wav files; got format=flac"):
        run(compose_config("generate", [*base, "format=flac", "c2pa_cert=a.pem", "c2pa_key=b.pem"]))
    try:
        import c2pa  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the c2pa-python package"):
            run(compose_config("generate", [*base, "c2pa_cert=a.pem", "c2pa_key=b.pem"]))
    else:
        with pytest.raises(ValueError, match="c2pa_cert: a.pem does not exist"):
            run(compose_config("generate", [*base, "c2pa_cert=a.pem", "c2pa_key=b.pem"]))
    assert not out.exists()
    definition = manifest({"prompt": "rain", "seed": 1, "model_hash": "ab", "duration": 1.0}, "rain_seed1.wav")
    actions = definition["assertions"][0]["data"]["actions"]
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"] == TRAINED_MEDIA
    assert definition["assertions"][1] == {"label": "org.audiodiff.generation",
                                           "data": {"model_hash": "ab", "prompt": "rain", "seed": 1}}


def test_sign_file_hands_the_manifest_to_c2pa_and_replaces_the_file(tmp_path, monkeypatch):
    import sys
    import types

    from audiodiff.pipeline.c2pa_manifest import sign_file

    seen = {}
    fake = types.ModuleType("c2pa")
    fake.C2paSignerInfo = lambda alg, cert, key, tsa: ("info", alg, cert, key, tsa)
    fake.Signer = types.SimpleNamespace(from_info=lambda info: ("signer", info))

    class Builder:
        @staticmethod
        def from_json(text):
            seen["manifest"] = json.loads(text)
            return Builder()

        def sign(self, signer, mime, source, dest):
            seen["signer"], seen["mime"] = signer, mime
            dest.write(source.read() + b"SIGNED")

    fake.Builder = Builder
    monkeypatch.setitem(sys.modules, "c2pa", fake)
    path = save_audio(tmp_path / "clip.wav", torch.zeros(1, 160), 16000)
    size = path.stat().st_size
    sign_file(path, {"prompt": "rain", "seed": 2}, b"CERT", b"KEY", alg="ps256")
    assert seen["mime"] == "audio/wav" and seen["signer"] == ("signer", ("info", b"ps256", b"CERT", b"KEY", None))
    assert seen["manifest"]["assertions"][1]["data"] == {"prompt": "rain", "seed": 2}
    assert path.read_bytes().endswith(b"SIGNED") and path.stat().st_size == size + 6
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]  # no temporary file left
