"""The normalised log-mel representation: shapes, statistics, round trip and vocoder agreement."""

import math

import pytest
import torch

from audiodiff.representations.mel import MelRepresentation
from audiodiff.vocoders.griffinlim import GriffinLimVocoder


def vocoder(**kw) -> GriffinLimVocoder:
    args = dict(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, f_max=8000.0, power=1.0, n_iter=16)
    return GriffinLimVocoder(**{**args, **kw})


def rep(**kw) -> MelRepresentation:
    return MelRepresentation(n_fft=512, hop_length=128, n_mels=40, vocoder=vocoder(**kw))


def tone(freq: float, seconds: float = 0.5, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * math.pi * freq * t))[None, None]


def test_contract_attributes_and_frames():
    r = rep()
    assert (r.sample_rate, r.channels, r.latent_channels, r.frame_rate) == (16000, 1, 40, 125.0)
    z = r.encode(tone(440.0, seconds=0.512))  # 8192 samples = 64 hops
    assert z.shape == (1, 40, r.num_frames(0.512)) == (1, 40, 65)
    # For any duration, num_frames frames decode to at least that many samples.
    for seconds in (0.1, 0.5, 0.77):
        wav = r.decode(torch.zeros(1, 40, r.num_frames(seconds)))
        assert wav.shape[-1] >= round(seconds * 16000)


def test_statistics_normalise_and_travel_in_the_state_dict():
    r = rep()
    assert not r.is_fitted
    wavs = [tone(f) for f in (220.0, 880.0, 1760.0)]
    r.fit_statistics(wavs)
    assert r.is_fitted
    z = torch.cat([r.encode(w) for w in wavs]).transpose(1, 2).reshape(-1, 40)
    torch.testing.assert_close(z.mean(0), torch.zeros(40), atol=1e-4, rtol=0)
    fresh = rep()
    fresh.load_state_dict(r.state_dict())
    assert fresh.is_fitted and torch.equal(fresh.encode(wavs[0]), r.encode(wavs[0]))


def test_decode_keeps_the_pitch():
    r = rep()
    r.fit_statistics([tone(440.0)])
    wav = r.decode(r.encode(tone(440.0)))[0, 0]
    spectrum = torch.fft.rfft(wav * torch.hann_window(len(wav))).abs()
    assert abs(spectrum.argmax().item() * 16000 / len(wav) - 440.0) < 10.0


def test_mismatched_vocoder_is_refused_with_both_sides_named():
    with pytest.raises(ValueError, match="power: representation 1.0, vocoder 2.0"):
        rep(power=2.0)
    with pytest.raises(ValueError, match="hop_length: representation 128, vocoder 256"):
        MelRepresentation(n_fft=512, hop_length=128, n_mels=40, vocoder=vocoder(hop_length=256))


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expected wav \[B, 1, T\]"):
        rep().encode(torch.zeros(2, 2, 100))
