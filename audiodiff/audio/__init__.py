"""audiodiff.audio."""
