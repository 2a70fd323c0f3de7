"""Audio primitives: files, transforms, loudness and mel features.

Submodules are imported explicitly (``from audiodiff.audio.io import load_audio``) so that importing one
does not pull in the dependencies of the others:

- ``errors``: typed ``AudioError`` family naming the offending file;
- ``io``: ``load_audio``, ``audio_info``, ``save_audio`` (soundfile, audioread fallback), ``check_shortfall``
  (the one rule for WAVs whose header overstates their data);
- ``transforms``: ``resample`` (soxr), ``to_channels``, ``crop_or_pad``, ``random_offset``;
- ``loudness``: ITU-R BS.1770 ``integrated_loudness`` (400 ms blocks), ``event_loudness`` (50 ms blocks, for short
  sounds: the sfx attributes) and ``normalize_loudness`` (pyloudnorm);
- ``mel``: ``mel_filterbank``, ``MelSpectrogram``, ``log_compress`` / ``log_decompress``.
"""
