"""audiodiff.data."""
