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


def stereo_rep(**kw) -> MelRepresentation:
    return MelRepresentation(n_fft=512, hop_length=128, n_mels=40, channels=2, vocoder=vocoder(**kw))


def test_stereo_stacks_one_mel_per_channel_left_first():
    r = stereo_rep()
    assert (r.channels, r.latent_channels) == (2, 80)
    left, right = tone(440.0), 0.1 * tone(1760.0)
    r.fit_statistics([torch.cat([left, right], dim=1)])
    z = r.encode(torch.cat([left, right], dim=1))
    assert z.shape == (1, 80, 1 + 8000 // 128)
    # Each half is the mono encoding of its channel under the shared statistics.
    mono = MelRepresentation(n_fft=512, hop_length=128, n_mels=40, vocoder=vocoder())
    mono.load_state_dict(r.state_dict())
    torch.testing.assert_close(z[:, :40], mono.encode(left))
    torch.testing.assert_close(z[:, 40:], mono.encode(right))
    # Swapping the channels swaps the halves: the statistics treat left and right alike.
    swapped = r.encode(torch.cat([right, left], dim=1))
    torch.testing.assert_close(swapped, torch.cat([z[:, 40:], z[:, :40]], dim=1))


def test_stereo_decode_keeps_each_channels_pitch_and_level_difference():
    r = stereo_rep()
    wav = torch.cat([tone(440.0), 0.25 * tone(1760.0)], dim=1)  # right 12 dB below left, another pitch
    r.fit_statistics([wav])
    out = r.decode(r.encode(wav))
    assert out.shape[:2] == (1, 2)
    peaks = []
    for channel in out[0]:
        spectrum = torch.fft.rfft(channel * torch.hann_window(len(channel))).abs()
        peaks.append(spectrum.argmax().item() * 16000 / len(channel))
    assert abs(peaks[0] - 440.0) < 20.0 and abs(peaks[1] - 1760.0) < 20.0  # bins are 16 Hz wide
    level_db = 20 * math.log10(out[0, 0].square().mean().sqrt() / out[0, 1].square().mean().sqrt())
    assert abs(level_db - 12.04) < 1.5


def test_identical_channels_decode_to_identical_channels():
    r = stereo_rep()
    wav = tone(660.0).expand(1, 2, -1)
    r.fit_statistics([wav])
    out = r.decode(r.encode(wav))
    assert torch.equal(out[0, 0], out[0, 1])  # Griffin-Lim starts from zero phase: a centred sound stays centred


def test_wrong_channel_count_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"expected wav \[B, 2, T\] \(2 channel\(s\)\), got \(1, 1, 8000\)"):
        stereo_rep().encode(tone(440.0))
    with pytest.raises(ValueError, match=r"expected z \[B, 80, F\] \(2 × 40 bands\), got \(1, 40, 10\)"):
        stereo_rep().decode(torch.zeros(1, 40, 10))
