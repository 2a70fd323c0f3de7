"""audiodiff.representations."""
