"""The near-copy guard: the training-set index (built, saved, loaded), the guard's verdicts, the pipeline's
regenerate / refuse behaviour and messages, the missing-index error, the generate command's `guard.*` settings and
the page; and the independent copy definition (aligned log-mel correlation) it is measured against."""

import json
import math
from pathlib import Path

import pytest
import torch
from debug_model import debug_export

from audiodiff.audio.io import save_audio
from audiodiff.config import compose_config
from audiodiff.data.manifest import write_manifest
from audiodiff.evaluation.copies import COPY_THRESHOLD, CopyScorer, aligned_mel_correlation, is_copy
from audiodiff.generate import run
from audiodiff.guard import MissingIndexError, NearCopyGuard, NearCopyIndex
from audiodiff.guard.__main__ import main as guard_main
from audiodiff.pipeline import AudioDiffusionPipeline, CopyVerdict, NearCopyRefused
from audiodiff.pipeline.near_copy import COPY_SEED_STRIDE
from audiodiff.web.server import BadRequest, Studio

RATE = 16_000


def beeps(freq: float, starts: list[float], seconds: float = 1.0, length: float = 0.12) -> torch.Tensor:
    """[1, T] tone bursts of `freq` Hz starting at `starts` (s), amplitude 0.5, with a little noise."""
    t = torch.arange(int(seconds * RATE)) / RATE
    env = sum(((t >= s) & (t < s + length)).float() for s in starts)
    g = torch.Generator().manual_seed(int(freq))
    return (0.5 * env * torch.sin(2 * math.pi * freq * t) + 1e-5 * torch.randn(t.shape, generator=g))[None]


def training_clips() -> list[torch.Tensor]:
    return [beeps(300 + 170 * i, [0.1 + 0.07 * i, 0.5 + 0.05 * i][: 1 + i % 2]) for i in range(8)]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return debug_export(tmp_path_factory.mktemp("model") / "export")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    rows = []
    for i, clip in enumerate(training_clips()):
        save_audio(folder / f"{i}.wav", clip, RATE)
        rows.append({"audio": f"{i}.wav", "caption": f"clip {i}", "split": "train"})
    rows.append({"audio": "0.wav", "caption": "held out", "split": "test"})
    return write_manifest(folder / "manifest.jsonl", rows)


@pytest.fixture(scope="module")
def indexed(export, manifest, tmp_path_factory) -> Path:
    """A copy of the tiny export with the index of the 8 training clips."""
    folder = tmp_path_factory.mktemp("indexed") / "export"
    folder.mkdir()
    for file in export.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    assert guard_main(["index", f"model={folder}", f"manifest={manifest}", "quantile=0.99"]) == 0
    return folder


def test_aligned_mel_correlation_finds_a_shifted_copy_and_rejects_other_sounds():
    a = beeps(440, [0.2, 0.6])
    shifted = torch.roll(a, int(0.15 * RATE), dims=-1) * 0.5 + 1e-4 * torch.randn(a.shape)  # later, 6 dB quieter
    scorer = CopyScorer()
    r, shift = scorer.score(scorer.spectrogram(a, RATE), scorer.spectrogram(shifted, RATE))
    assert r >= 0.97 and shift == pytest.approx(0.15, abs=0.011)
    assert is_copy(a, shifted, RATE) and aligned_mel_correlation(a, a, RATE) == pytest.approx(1.0)
    assert aligned_mel_correlation(a, beeps(2500, [0.2, 0.6]), RATE) < COPY_THRESHOLD  # another pitch
    assert aligned_mel_correlation(a, beeps(440, [0.2, 0.35, 0.6, 0.75]), RATE) < COPY_THRESHOLD  # more events
    noise = 0.3 * torch.randn(1, RATE, generator=torch.Generator().manual_seed(1))
    assert aligned_mel_correlation(a, noise, RATE) < 0.5


def test_the_index_round_trips_through_safetensors_and_json(indexed, manifest):
    index = NearCopyIndex.load(indexed)
    info = json.loads((indexed / "near_copy_index.json").read_text())
    assert index.embeddings.shape[0] == 8 == len(index.clips) == info["count"]  # the test row is not indexed
    assert info["embedder"]["name"] == "logmel" and info["embedder"]["settings"] == {"seconds": 1.0}
    assert info["quantile"] == 0.99 and 0 < info["threshold"] < 1 and info["manifest"] == str(manifest.resolve())
    assert [c["line"] for c in index.clips] == list(range(1, 9)) and index.clips[3]["caption"] == "clip 3"
    assert Path(index.clips[3]["audio"]) == manifest.parent / "3.wav"
    again = NearCopyIndex.load(indexed)
    assert torch.equal(again.embeddings, index.embeddings) and again.threshold == index.threshold


def test_the_guard_catches_a_training_clip_and_passes_another_sound(indexed, manifest):
    guard = NearCopyGuard.from_export(indexed, on_copy="refuse")
    clips = training_clips()
    copy = torch.roll(clips[5], 160, dims=-1) * 0.8  # 10 ms later, 2 dB quieter
    other = beeps(3500, [0.05, 0.3, 0.55, 0.8])
    silent = torch.zeros(1, RATE)
    verdicts = guard.check(torch.stack([copy, other, silent]), RATE)
    assert verdicts[0].flagged and verdicts[0].row == 6 and verdicts[0].clip == str(manifest.parent / "5.wav")
    assert not verdicts[1].flagged and not verdicts[2].flagged and verdicts[2].similarity == 0.0
    assert "manifest line 6" in verdicts[0].describe() and ">= threshold" in verdicts[0].describe()


def test_a_model_without_an_index_is_named_with_the_command_that_builds_it(export):
    with pytest.raises(MissingIndexError, match=f"{export}: no near-copy index .*python -m audiodiff.guard index "
                                                f"model={export} manifest="):
        NearCopyGuard.from_export(export)
    assert guard_main(["index", f"model={export}"]) == 2  # no manifest
    assert guard_main(["build", f"model={export}"]) == 2


class ScriptedGuard:
    """Flags the clips it is shown while `flags` says so (one entry per check call)."""

    name = "scripted"

    def __init__(self, on_copy: str, tries: int, flags: list[bool]) -> None:
        self.on_copy, self.tries, self.flags, self.seen = on_copy, tries, list(flags), []

    def check(self, audio, sample_rate):
        self.seen.append(audio.shape[0])
        flag = self.flags.pop(0) if self.flags else False
        return [CopyVerdict(0.99 if flag else 0.5, 0.95, "/data/7.wav", 8, "two beeps") for _ in range(audio.shape[0])]


def test_regenerate_tries_other_seeds_and_records_them(export):
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    plain = pipe(["a", "b"], duration=0.25, steps=1, seed=3)
    assert plain.guard is None  # off by default
    pipe.near_copy_guard = ScriptedGuard("regenerate", 3, [True, True, False])
    out = pipe(["a", "b"], duration=0.25, steps=1, seed=3)
    assert pipe.near_copy_guard.seen == [2, 2, 2]  # the first clips, then each retry's
    assert out.seeds == [3 + 2 * COPY_SEED_STRIDE, 4 + 2 * COPY_SEED_STRIDE]
    pipe.near_copy_guard = None
    again = pipe(["a", "b"], duration=0.25, steps=1, seed=out.seeds)  # what those seeds give, unchecked
    assert torch.allclose(out.audio, again.audio, atol=1e-5) and not torch.allclose(out.audio, plain.audio)
    record = out.guard[0]
    assert record["passed"] and [r["seed"] for r in record["rejected"]] == [3, 3 + COPY_SEED_STRIDE]
    assert record["rejected"][0]["clip"] == "/data/7.wav" and record["rejected"][0]["similarity"] == 0.99
    from audiodiff.pipeline import describe

    assert describe(out, "a", 0, "m")["near_copy_guard"] == record


def test_refuse_names_the_training_clip_and_regenerate_refuses_after_its_tries(export):
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    pipe.near_copy_guard = ScriptedGuard("refuse", 3, [True])
    with pytest.raises(NearCopyRefused, match=r"prompt 'a': refused by the near-copy guard: seed 0 resembles training "
                                              r"clip /data/7.wav \(manifest line 8, \"two beeps\"\): similarity "
                                              r"0.9900 >= threshold 0.9500") as err:
        pipe("a", duration=0.25, steps=1)
    assert pipe.near_copy_guard.seen == [1] and err.value.refused == (0,)
    assert err.value.output.guard[0]["passed"] is False
    pipe.near_copy_guard = ScriptedGuard("regenerate", 2, [True, True, True])
    with pytest.raises(NearCopyRefused, match=rf"seed {2 * COPY_SEED_STRIDE} \(and 2 other seed\(s\) before it\)"):
        pipe("a", duration=0.25, steps=1)
    pipe.near_copy_guard = ScriptedGuard("refuse", 0, [True])
    with pytest.raises(BadRequest, match="refused by the near-copy guard: .*/data/7.wav"):
        Studio(pipe).generate({"prompt": "a", "duration": 0.25, "steps": 1})


def test_the_generate_command_wires_the_guard(indexed, export, tmp_path):
    out = tmp_path / "out"
    common = [f"model={indexed}", "prompt=[a,b]", "steps=1", f"out={out}", "watermark=false"]
    written = run(compose_config("generate", [*common, "guard.near_copy=true", "guard.tries=2"]))
    sidecar = json.loads(written[0].with_suffix(".json").read_text())
    assert sidecar["near_copy_guard"]["on_copy"] == "regenerate" and "nearest" in sidecar["near_copy_guard"]
    # every output of this model is a "near copy" at threshold -1: refused, each naming its training clip
    with pytest.raises(NearCopyRefused, match=r"0 clip\(s\) written .*prompt 'a': refused by the near-copy guard: "
                                              r"seed 0 resembles training clip .*manifest line"):
        run(compose_config("generate", [*common, "guard.near_copy=true", "guard.on_copy=refuse",
                                        "guard.threshold=-1", f"out={tmp_path / 'refused'}"]))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(MissingIndexError, match="python -m audiodiff.guard index"):
        run(compose_config("generate", [f"model={export}", "prompt=a", "guard.near_copy=true"]))
    with pytest.raises(ValueError, match="guard.on_copy: expected one of"):
        run(compose_config("generate", [*common, "guard.near_copy=true", "guard.on_copy=warn"]))
    assert "near_copy_guard" not in json.loads(run(compose_config("generate", common))[0]
                                               .with_suffix(".json").read_text())
