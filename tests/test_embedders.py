"""Audio embedders against their reference implementations, all with random weights (no checkpoint downloads).

VGGish against the `torchvggish` package (model and `waveform_to_examples` frontend), CNN14 against
`panns_inference.models.Cnn14` (torchlibrosa frontend); CLAP and EnCodec are tiny transformers models built from
their config classes and checked against the transformers code paths they wrap.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audiodiff.audio.io import save_audio
from audiodiff.evaluation.embedders import (
    Classifier,
    Embedder,
    EmbedderName,
    FrameEmbedder,
    embedder_loader,
    load_embedder,
)
from audiodiff.evaluation.embedders.base import batches_by_length, prepare_clips, weights_digest
from audiodiff.evaluation.embedding_cache import EmbeddingCache


def _noise(seed: int, channels: int, samples: int, scale: float = 0.1) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((channels, samples)) * scale).float()


def _tones(sample_rate: int, seconds: float) -> torch.Tensor:
    """[1, T] sum of 440 Hz and 1500 Hz sines, band-limited at any rate used here."""
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    return (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.2 * torch.sin(2 * torch.pi * 1500 * t + 1.0)).float()[None]


# ----------------------------------------------------------------------------------------------------- shared parts


def test_registry_names_every_loader():
    from typing import get_args

    from audiodiff.evaluation.embedders.vggish import load_vggish

    assert embedder_loader("vggish") is load_vggish
    for name in get_args(EmbedderName):
        assert callable(embedder_loader(name))
    with pytest.raises(ValueError, match="unknown embedder 'openl3'"):
        load_embedder("openl3")  # type: ignore[arg-type]


def test_prepare_clips_checks_downmixes_and_resamples():
    stereo = torch.stack([_tones(16000, 0.5)[0], torch.zeros(8000)])
    (clip,) = prepare_clips([stereo], 16000, 16000, 1, "test")
    torch.testing.assert_close(clip, stereo.mean(dim=0, keepdim=True))
    (clip,) = prepare_clips(stereo[None], 16000, 32000, 2, "test")
    assert clip.shape == (2, 16000)
    with pytest.raises(ValueError, match=r"batch tensor must be \[B, C, T\]"):
        prepare_clips(torch.zeros(2, 100), 16000, 16000, 1, "test")
    with pytest.raises(ValueError, match="clip 1 holds NaN"):
        prepare_clips([torch.zeros(1, 10), torch.full((1, 10), float("nan"))], 16000, 16000, 1, "test")
    with pytest.raises(ValueError, match="floating-point"):
        prepare_clips([torch.zeros(1, 10, dtype=torch.int16)], 16000, 16000, 1, "test")


def test_batches_by_length_groups_equal_lengths():
    batches = list(batches_by_length([5, 7, 5, 5, 7], batch_size=2))
    assert batches == [[0, 2], [3], [1, 4]]


def test_weights_digest_sees_every_tensor():
    torch.manual_seed(0)
    a = nn.BatchNorm1d(3)
    b = nn.BatchNorm1d(3)
    assert weights_digest(a) == weights_digest(b)
    b.running_var[1] = 2.0  # a buffer, not a parameter
    assert weights_digest(a) != weights_digest(b)


# ----------------------------------------------------------------------------------------------------------- VGGish


@pytest.fixture(scope="module")
def torchvggish():
    return pytest.importorskip("torchvggish", reason="reference package from the [dev] extra")


@pytest.fixture(scope="module")
def vggish_pair(torchvggish):
    """(reference torchvggish VGG with random weights, our VGGish holding the same state dict)."""
    from audiodiff.evaluation.embedders.vggish import VGGish

    torch.manual_seed(0)
    reference = torchvggish.torchvggish._vgg(postprocess=False).eval()
    with torch.no_grad():  # scale the last layer so that embeddings are O(1) and atol 1e-5 means something
        reference.embeddings[4].weight.mul_(30.0)
    ours = VGGish()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.fixture(scope="module")
def vggish_embedder(vggish_pair):
    from audiodiff.evaluation.embedders.vggish import VGGishEmbedder

    return VGGishEmbedder(vggish_pair[1])


def test_vggish_mel_matrix_matches_reference(torchvggish):
    from audiodiff.evaluation.embedders.vggish import vggish_mel_matrix

    expected = torchvggish.mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125,
        upper_edge_hertz=7500)
    np.testing.assert_allclose(vggish_mel_matrix().numpy(), expected, rtol=0, atol=1e-12)


def test_vggish_frontend_matches_waveform_to_examples(torchvggish):
    from audiodiff.evaluation.embedders.vggish import VGGishFrontend

    stereo = np.random.default_rng(0).standard_normal((2, 16000 * 3 + 777)) * 0.1
    expected = torchvggish.vggish_input.waveform_to_examples(stereo.T, 16000, return_tensor=False)  # [3, 96, 64]
    frontend = VGGishFrontend()
    mono = torch.from_numpy(stereo.mean(axis=0))[None]
    ours64 = frontend(mono)[0].numpy()
    assert ours64.shape == expected.shape == (3, 96, 64)
    np.testing.assert_allclose(ours64, expected, rtol=0, atol=1e-9)
    ours32 = frontend(mono.float())[0].numpy()
    np.testing.assert_allclose(ours32, expected, rtol=0, atol=1e-4)  # float32 STFT round-off on log values


def test_vggish_network_and_embedder_match_torchvggish(torchvggish, vggish_pair):
    from audiodiff.evaluation.embedders.vggish import VGGishEmbedder

    reference, ours = vggish_pair
    stereo = _noise(1, 2, 16000 * 2 + 5000)
    examples = torchvggish.vggish_input.waveform_to_examples(stereo.numpy().T.astype(np.float64), 16000)
    with torch.no_grad():
        expected = reference(examples.detach())
        got = ours(examples.detach()[:, 0])
    assert expected.shape == (2, 128) and (expected > 0).float().mean() > 0.2 and expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    embedder = VGGishEmbedder(ours, batch_size=1)
    assert isinstance(embedder, FrameEmbedder)
    (frames,) = embedder.embed_frames([stereo], 16000)
    torch.testing.assert_close(frames, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(embedder.embed(stereo[None], 16000), expected.mean(dim=0, keepdim=True),
                               rtol=0, atol=1e-5)


def test_vggish_pca_postprocessing_matches_torchvggish(torchvggish, vggish_pair):
    from audiodiff.evaluation.embedders.vggish import VGGishEmbedder, VGGishPCA

    reference, ours = vggish_pair
    generator = torch.Generator().manual_seed(3)
    matrix = torch.randn(128, 128, generator=generator) * 0.3
    means = torch.rand(128, generator=generator)
    postprocessor = object.__new__(torchvggish.torchvggish.Postprocessor)  # its __init__ downloads the PCA file
    postprocessor._pca_matrix, postprocessor._pca_means = matrix, means.reshape(-1, 1)
    wav = _noise(2, 1, 16000 * 3)
    examples = torchvggish.vggish_input.waveform_to_examples(wav[0].double().numpy(), 16000)
    with torch.no_grad():
        expected = postprocessor.postprocess(reference(examples.detach()))
    (got,) = VGGishEmbedder(ours, VGGishPCA(matrix, means)).embed_frames([wav], 16000)
    assert len(expected.unique()) > 10
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_vggish_resamples_and_pads(vggish_embedder):
    from audiodiff.evaluation.embedders.vggish import MIN_SAMPLES

    embedder = vggish_embedder
    at_16k = embedder.embed([_tones(16000, 2.0)], 16000)
    for rate in (44100, 48000):
        torch.testing.assert_close(embedder.embed([_tones(rate, 2.0)], rate), at_16k, rtol=1e-3, atol=1e-4)
    short = _noise(4, 1, 8000)
    frames = embedder.embed_frames([short, _noise(5, 1, 40000)], 16000)
    assert [f.shape[0] for f in frames] == [1, 2]
    padded = torch.nn.functional.pad(short, (0, MIN_SAMPLES - 8000))
    torch.testing.assert_close(frames[0], embedder.embed_frames([padded], 16000)[0], rtol=0, atol=1e-6)


def test_load_vggish_reads_torchvggish_files(tmp_path, vggish_pair, vggish_embedder):
    from audiodiff.evaluation.embedders.vggish import VGGishEmbedder, VGGishPCA, load_vggish, load_vggish_pca

    reference, ours = vggish_pair
    generator = torch.Generator().manual_seed(4)
    matrix, means = torch.randn(128, 128, generator=generator), torch.rand(128, generator=generator)
    torch.save({"pca_eigen_vectors": matrix.double().numpy(), "pca_means": means.double().numpy()},
               tmp_path / "pca.pth")  # numpy arrays, as in the official PCA file
    pca = load_vggish_pca(tmp_path / "pca.pth")
    torch.testing.assert_close(pca.pca_matrix, matrix, rtol=0, atol=0)
    torch.testing.assert_close(pca.pca_means, means[:, None], rtol=0, atol=0)

    # The torch.hub model's state dict: the official weights file's entries plus pproc.*.
    hub_state = {**reference.state_dict(), "pproc.pca_matrix": matrix, "pproc.pca_means": means[:, None]}
    torch.save(hub_state, tmp_path / "hub.pth")
    wav = _noise(6, 1, 20000)
    raw, post = vggish_embedder, VGGishEmbedder(ours, VGGishPCA(matrix, means))
    loaded_raw = load_vggish(tmp_path / "hub.pth")
    loaded_post = load_embedder("vggish", tmp_path / "hub.pth", postprocess=True)
    assert loaded_raw.id == raw.id and loaded_post.id == post.id and raw.id != post.id
    torch.testing.assert_close(loaded_raw.embed([wav], 16000), raw.embed([wav], 16000), rtol=0, atol=0)
    torch.testing.assert_close(loaded_post.embed([wav], 16000), post.embed([wav], 16000), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        load_vggish(tmp_path / "missing.pth")


def test_vggish_through_embedding_cache(tmp_path, vggish_embedder):
    from audiodiff.audio.io import load_audio

    embedder = vggish_embedder
    paths = [save_audio(tmp_path / f"{i}.wav", _noise(10 + i, 2, 22050), 22050, subtype="FLOAT") for i in range(2)]

    def embed(batch: list[Path]) -> torch.Tensor:
        return embedder.embed([load_audio(p)[0] for p in batch], 22050)

    cached = EmbeddingCache(tmp_path / "cache").embed_files(paths, embedder.id, embed)
    direct = embedder.embed([load_audio(p)[0] for p in paths], 22050)
    np.testing.assert_array_equal(np.stack(cached), direct.numpy())
    assert (tmp_path / "cache").is_dir() and embedder.frames_id != embedder.id


# ------------------------------------------------------------------------------------------------------ PANNs CNN14


def _import_panns_models() -> types.ModuleType:
    """`panns_inference.models` without running the package's __init__, which fetches a label file at import."""
    pytest.importorskip("torchlibrosa", reason="reference package from the [dev] extra")
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("panns_inference (reference package from the [dev] extra) is not installed")
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "panns_inference"}
    package = types.ModuleType("panns_inference")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["panns_inference"] = package
    try:
        return importlib.import_module("panns_inference.models")
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "panns_inference"]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def cnn14_pair():
    """(reference panns_inference Cnn14 with random weights and batch-norm statistics, our Cnn14 loaded from it)."""
    from audiodiff.evaluation.embedders.panns import cnn14_from_state_dict

    torch.manual_seed(0)
    reference = _import_panns_models().Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64,
                                              fmin=50, fmax=14000, classes_num=527)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    reference.eval()
    return reference, cnn14_from_state_dict({k: v.clone() for k, v in reference.state_dict().items()})


def test_cnn14_matches_panns_inference(cnn14_pair):
    from audiodiff.evaluation.embedders.panns import PannsEmbedder

    reference, ours = cnn14_pair
    stereo = [_noise(20, 2, 16000), _noise(21, 2, 12000), _noise(22, 2, 16000)]
    embedder = PannsEmbedder(ours, batch_size=2)
    assert isinstance(embedder, Classifier) and embedder.probability_mode == "sigmoid"
    result = embedder.forward(stereo, 32000)
    for indices in ([0, 2], [1]):
        mono = torch.cat([stereo[i].mean(dim=0, keepdim=True) for i in indices])  # librosa.load(mono=True)
        with torch.no_grad():
            expected = reference(mono)
            log_mel = reference.logmel_extractor(reference.spectrogram_extractor(mono))
            torch.testing.assert_close(ours.log_mel(mono), log_mel, rtol=0, atol=1e-3)  # dB; conv vs FFT STFT
        assert expected["embedding"].abs().max() > 0.1
        torch.testing.assert_close(result.embedding[indices], expected["embedding"], rtol=0, atol=1e-4)
        torch.testing.assert_close(result.clipwise[indices], expected["clipwise_output"], rtol=0, atol=1e-4)
    assert result.embedding.shape == (3, 2048) and result.clipwise.shape == (3, 527)


def test_load_panns_reads_the_official_checkpoint_layout(tmp_path, cnn14_pair):
    from audiodiff.evaluation.embedders.panns import PannsEmbedder, load_cnn14_state_dict, load_panns

    reference, ours = cnn14_pair
    checkpoint = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": reference.state_dict(), "iteration": 0}, checkpoint)
    try:
        loaded = load_panns(checkpoint)
    finally:
        checkpoint.unlink()
    direct = PannsEmbedder(ours)
    assert loaded.id == direct.id and loaded.classify_id != loaded.id
    wav = _noise(23, 1, 8000)  # 0.5 s at 16 kHz: resampled to 32 kHz
    torch.testing.assert_close(loaded.classify([wav], 16000), direct.classify([wav], 16000), rtol=0, atol=0)
    torch.testing.assert_close(loaded.embed([wav], 16000), direct.embed([wav], 16000), rtol=0, atol=0)

    other_frontend = dict(reference.state_dict())
    other_frontend["logmel_extractor.melW"] = other_frontend["logmel_extractor.melW"].roll(1, dims=1)
    with pytest.raises(ValueError, match="logmel_extractor.melW"):
        load_cnn14_state_dict(ours, other_frontend)
    with pytest.raises(FileNotFoundError, match="zenodo"):
        load_panns(tmp_path / "missing.pth")


def test_cnn14_pads_short_clips(cnn14_pair):
    from audiodiff.evaluation.embedders.panns import MIN_SAMPLES, PannsEmbedder

    embedder = PannsEmbedder(cnn14_pair[1])
    short = _noise(24, 1, 4000)
    padded = torch.nn.functional.pad(short, (0, MIN_SAMPLES - 4000))
    torch.testing.assert_close(embedder.embed([short], 32000), embedder.embed([padded], 32000), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------- CLAP


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "<pad>", "</s>", "<unk>", "a", "dog", "barks", "cat", "piano", "plays", "loud", "soft", "rain"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                             special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _tiny_clap(fusion: bool):
    """(ClapModel, ClapFeatureExtractor at 16 kHz with 1 s windows, tokenizer), random weights."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    text = dict(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40)
    audio = dict(num_mel_bins=16, spec_size=64, window_size=4, patch_size=4, patch_stride=(4, 4), depths=[1, 1],
                 num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, enable_fusion=fusion)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).eval()
    extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                                     fft_window_size=400, frequency_max=8000,
                                     truncation="fusion" if fusion else "rand_trunc")
    return model, extractor, _tiny_tokenizer()


@pytest.fixture(scope="module")
def clap_parts():
    pytest.importorskip("transformers")
    return _tiny_clap(fusion=False)


def test_clap_embeddings_match_the_model_forward(clap_parts):
    from audiodiff.evaluation.embedders.clap import ClapEmbedder

    model, extractor, tokenizer = clap_parts
    embedder = ClapEmbedder(model, extractor, tokenizer, batch_size=2)
    assert isinstance(embedder, Embedder) and embedder.embedding_dim == 8
    clips = [_noise(30, 1, 12000), _noise(31, 1, 16000), _noise(32, 1, 9000)]
    texts = ["a dog barks", "piano plays soft", "rain"]
    audio = embedder.embed(clips, 16000)
    text = embedder.embed_text(texts)
    features = extractor([c[0].numpy() for c in clips], sampling_rate=16000, return_tensors="pt")
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                         input_features=features["input_features"], is_longer=features["is_longer"])
    torch.testing.assert_close(audio, expected.audio_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(text, expected.text_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(audio.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-6)
    assert not torch.allclose(audio[0], audio[1], atol=1e-3)


def test_clap_is_deterministic_and_windows_long_clips(clap_parts):
    from audiodiff.evaluation.embedders.clap import ClapEmbedder

    embedder = ClapEmbedder(*clap_parts, batch_size=4)
    long_clip = _noise(33, 2, 40000)  # 2.5 windows of 1 s at 16 kHz, stereo
    state = np.random.get_state()
    first = embedder.embed([long_clip, _noise(34, 1, 5000)], 16000)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator untouched
    torch.testing.assert_close(ClapEmbedder(*clap_parts, batch_size=1).embed([long_clip], 16000), first[:1],
                               rtol=0, atol=1e-6)
    mono = long_clip.mean(dim=0, keepdim=True)
    windows = embedder.embed([mono[:, :16000], mono[:, 16000:32000], mono[:, 32000:]], 16000).double()
    expected = windows[0] + windows[1] + 0.5 * windows[2]
    torch.testing.assert_close(first[0].double(), expected / expected.norm(), rtol=0, atol=1e-6)


def test_fused_clap_embeddings_do_not_depend_on_the_batch():
    pytest.importorskip("transformers")
    from audiodiff.evaluation.embedders.clap import ClapEmbedder

    embedder = ClapEmbedder(*_tiny_clap(fusion=True))
    clips = [_noise(35, 1, 12000), _noise(36, 1, 16000), _noise(37, 1, 8000)]
    together = embedder.embed(clips, 16000)
    alone = torch.cat([embedder.embed([clip], 16000) for clip in clips])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_clap_score_is_the_cosine_per_pair():
    from audiodiff.evaluation.embedders.clap import clap_score

    rng = np.random.default_rng(7)
    audio, text = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    expected = [a @ t / (np.linalg.norm(a) * np.linalg.norm(t)) for a, t in zip(audio, text, strict=True)]
    got = clap_score(torch.from_numpy(audio).float(), torch.from_numpy(text).float())
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        clap_score(torch.zeros(2, 8), torch.zeros(3, 8))


def test_load_clap_reads_a_local_folder(tmp_path, clap_parts):
    from transformers import ClapProcessor

    from audiodiff.evaluation.embedders.clap import ClapEmbedder

    model, extractor, tokenizer = clap_parts
    model.save_pretrained(tmp_path)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(tmp_path)
    loaded = load_embedder("clap", tmp_path)
    direct = ClapEmbedder(model, extractor, tokenizer)
    assert loaded.id == direct.id
    wav = _noise(38, 1, 24000)  # 0.5 s at 48 kHz: resampled to 16 kHz
    torch.testing.assert_close(loaded.embed([wav], 48000), direct.embed([wav], 48000), rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.embed_text(["a cat"]), direct.embed_text(["a cat"]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------- EnCodec


def _tiny_encodec(**overrides):
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(hidden_size=16, num_filters=4, num_residual_layers=1, upsampling_ratios=[8, 4],
                           num_lstm_layers=1, codebook_size=16, codebook_dim=16, sampling_rate=8000,
                           target_bandwidths=[1.0], **overrides)
    torch.manual_seed(0)
    return EncodecModel(config).eval()


@pytest.mark.parametrize("overrides", [{}, {"audio_channels": 2, "normalize": True, "chunk_length_s": 0.1,
                                           "overlap": 0.01}], ids=["mono", "stereo-chunked-normalized"])
def test_encodec_frames_are_what_encode_quantizes(overrides):
    pytest.importorskip("transformers")
    from audiodiff.evaluation.embedders.encodec import EncodecEmbedder

    model = _tiny_encodec(**overrides)
    channels = model.config.audio_channels
    embedder = EncodecEmbedder(model, batch_size=2)
    assert isinstance(embedder, FrameEmbedder)
    clips = [_noise(40, channels, 8000), _noise(41, channels, 8000), _noise(42, channels, 6000)]
    frames = embedder.embed_frames(clips, 8000)

    for index, clip in enumerate(clips):
        seen: list[torch.Tensor] = []
        hook = model.encoder.register_forward_hook(lambda module, args, output, seen=seen: seen.append(output))
        try:
            with torch.no_grad():
                model.encode(clip[None], bandwidth=1.0)
        finally:
            hook.remove()
        expected = torch.cat(seen, dim=-1)[0].T  # encoder output of every chunk encode() quantised
        assert frames[index].shape == expected.shape and frames[index].shape[1] == 16
        torch.testing.assert_close(frames[index], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(embedder.embed(clips, 8000), torch.stack([f.mean(dim=0) for f in frames]))
    torch.testing.assert_close(embedder.embed(clips, 8000), embedder.embed(clips, 8000), rtol=0, atol=0)


def test_encodec_converts_channels_and_loads_a_local_folder(tmp_path):
    pytest.importorskip("transformers")
    from audiodiff.evaluation.embedders.encodec import EncodecEmbedder

    model = _tiny_encodec()
    embedder = EncodecEmbedder(model)
    stereo = _noise(43, 2, 16000)
    mono_at_8k = prepare_clips([stereo], 16000, 8000, 1, "test")[0]
    torch.testing.assert_close(embedder.embed([stereo], 16000), embedder.embed([mono_at_8k], 8000), rtol=0, atol=0)
    model.save_pretrained(tmp_path)
    loaded = load_embedder("encodec", tmp_path)
    assert loaded.id == embedder.id and loaded.frames_id != loaded.id
    torch.testing.assert_close(loaded.embed([stereo], 16000), embedder.embed([stereo], 16000), rtol=0, atol=0)
    assert EncodecEmbedder(_tiny_encodec(normalize=True)).id != embedder.id
