"""audiodiff.denoisers."""
