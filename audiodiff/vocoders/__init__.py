"""audiodiff.vocoders."""
