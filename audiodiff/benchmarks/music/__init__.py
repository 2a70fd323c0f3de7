"""The built-in music benchmark: General MIDI arrangements rendered with FluidSynth, captions, and the extractors of
style, tempo, key, mode and instruments with their fitted weights."""
