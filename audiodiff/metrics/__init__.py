"""audiodiff.metrics."""
