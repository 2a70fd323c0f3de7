"""Evaluation: a tiny end-to-end report on CPU, report cards that refuse to compare unlike measurements."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from audiodiff.benchmarks import ensure_corpus
from audiodiff.config import compose_config
from audiodiff.evaluation.report import ReportMismatchError, card_differences, compare_reports, spectrogram_grid
from audiodiff.evaluation.run import EvalSettings, evaluate_model
from audiodiff.export import write_export
from audiodiff.models.build import build_model, model_config
from audiodiff.pipeline import AudioDiffusionPipeline


class BandEnergies:
    """A deterministic stand-in embedder: mean log energy in 16 frequency bands (an honest, if weak, embedding)."""

    id = "band-energies-v1"
    sample_rate = 16000

    def embed(self, wavs, sample_rate):
        out = []
        for w in wavs:
            spec = torch.stft(w.mean(0), 512, window=torch.hann_window(512), return_complex=True).abs()
            out.append(torch.log(spec[:256].reshape(16, 16, -1).mean(dim=(1, 2)) + 1e-5))
        return torch.stack(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ensure_corpus("sfx", root, num_clips=48, workers=1)
    cfg = compose_config("train", ["recipe=debug", f"data.root={root}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("net.", "representation."))}
    export = write_export(tmp_path_factory.mktemp("model") / "export", state, model_config(cfg))
    return root, export


def test_a_tiny_evaluation_writes_a_complete_report(setup, tmp_path):
    root, export = setup
    pipe = AudioDiffusionPipeline(build_model(compose_config("train", ["recipe=debug", f"data.root={root}"])),
                                  model_id=str(export))
    settings = EvalSettings(corpus="sfx", root=str(root), n=3, steps=2, batch_size=2, n_boot=10,
                            cache=str(tmp_path / "cache"))
    report = evaluate_model(pipe, settings, tmp_path / "eval", {"bands": BandEnergies()})
    summary, card = report["summary"], report["card"]
    assert len(report["per_prompt"]) == 3 and all((tmp_path / "eval" / r["file"]).is_file()
                                                  for r in report["per_prompt"])
    assert {"attribute/kind", "attribute/mean", "bands/fad", "bands/near_copies"} <= set(summary)
    fad = summary["bands/fad"]
    assert fad["value"] >= 0 and fad["low"] <= fad["high"]
    assert card["n_prompts"] == 3 and card["embedders"]["bands"]["id"] == "band-energies-v1"
    assert card["embedders"]["bands"]["channels"] == "mean downmix to mono"
    assert card["reference"]["n"] > 0 and len(card["reference"]["sha256"]) == 64
    assert card["sampler"]["steps"] == 2 and card["seed"] == 0
    assert Image.open(tmp_path / "eval" / "spectrograms.png").size[0] > 0
    # The cache now holds the reference clips: a second run embeds nothing from disk again and agrees.
    again = evaluate_model(pipe, settings, tmp_path / "eval2", {"bands": BandEnergies()})
    assert again["summary"]["bands/fad"] == fad
    assert again["card"] | {"model": None} == card | {"model": None}


def test_the_cli_writes_report_files(setup, tmp_path):
    root, export = setup
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "audiodiff.evaluate", f"model={export}", "recipe=debug", f"data_root={root}", "n=2",
           "steps=2", "batch_size=2", "n_boot=5", f"out={out}", f"cache={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["card"]["recipe"] == "debug" and len(report["per_prompt"]) == 2
    assert "| attribute/mean |" in (out / "report.md").read_text()


def _report(tmp_path, name, **card):
    base = {"model": name, "corpus": "sfx", "seed": 0, "embedders": {"clap": {"id": "clap-abc"}}, "n_prompts": 10}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"card": base | card, "summary": {"clap/fad": {"value": 1.5, "low": 1.0, "high": 2.0},
                                                                 "attribute/mean": 0.8}}))
    return path


def test_reports_compare_only_under_the_same_conditions(tmp_path):
    a, b = _report(tmp_path, "a"), _report(tmp_path, "b")
    table = compare_reports([a, b])
    assert "| clap/fad | 1.5 [1, 2] | 1.5 [1, 2] |" in table
    c = _report(tmp_path, "c", seed=1, embedders={"clap": {"id": "clap-other"}})
    with pytest.raises(ReportMismatchError, match=r"embedders.clap.id: 'clap-abc' vs 'clap-other'; seed: 0 vs 1"):
        compare_reports([a, c])
    assert "compared despite differing cards" in compare_reports([a, c], force=True)
    assert card_differences({"model": "x", "seed": 0}, {"model": "y", "seed": 0}) == []


def test_spectrogram_grid_tiles_row_major(tmp_path):
    mels = [np.full((8, 10), float(i)) for i in range(5)]
    path = spectrogram_grid(mels, tmp_path / "grid.png", columns=2, gap=1)
    assert Image.open(path).size == (2 * 10 + 1, 3 * 16 + 2)


def test_training_logs_attribute_accuracy_periodically(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from audiodiff.training.diffusion.run import train

    root, _ = setup
    run_dir = tmp_path / "run"
    train(compose_config("train", ["recipe=debug", f"data.root={root}", f"run_dir={run_dir}",
                                   "evaluation.every_n_steps=2", "evaluation.n=2", "evaluation.steps=2"]))
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    mean = events.Scalars("eval/attribute_mean")
    assert [e.step for e in mean] == [2, 4]  # after optimizer steps 2 and 4
    assert all(0.0 <= e.value <= 1.0 for e in mean)
    assert "eval/attribute_kind" in events.Tags()["scalars"]


def test_training_refuses_attribute_checks_without_a_corpus(tmp_path):
    from audiodiff.training.diffusion.run import train

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    cfg = compose_config("train", ["recipe=debug", "data=manifest", f"data.manifest={manifest}",
                                   f"run_dir={tmp_path / 'run'}", "evaluation.every_n_steps=2"])
    with pytest.raises(ValueError, match="attribute checks need a built-in corpus"):
        train(cfg)


class ChannelBandEnergies(BandEnergies):
    """BandEnergies of each channel, concatenated: an embedder whose model takes two channels."""

    id = "channel-band-energies-v1"
    channels = 2

    def embed(self, wavs, sample_rate):
        return torch.cat([super(ChannelBandEnergies, self).embed([w[c:c + 1] for w in wavs], sample_rate)
                          for c in range(2)], dim=1)


def test_a_stereo_evaluation_scores_pan_and_names_how_each_embedder_reads_channels(tmp_path):
    root = tmp_path / "data"
    ensure_corpus("sfx_stereo", root, num_clips=48, workers=1)
    cfg = compose_config("train", ["recipe=debug", f"data.root={root}", "data.corpus=sfx_stereo", "data.channels=2"])
    torch.manual_seed(0)
    pipe = AudioDiffusionPipeline(build_model(cfg), model_id=str(tmp_path / "model"))
    settings = EvalSettings(corpus="sfx_stereo", root=str(root), n=3, steps=2, batch_size=3, n_boot=10,
                            cache=str(tmp_path / "cache"))
    report = evaluate_model(pipe, settings, tmp_path / "eval",
                            {"bands": BandEnergies(), "stereo_bands": ChannelBandEnergies()})
    assert report["attributes"]["pan"]["n"] == 3 and "attribute/pan" in report["summary"]
    cards = report["card"]["embedders"]
    assert cards["bands"]["channels"] == "mean downmix to mono"
    assert cards["stereo_bands"]["channels"] == "2 channels embedded together"
