"""audiodiff.metrics.attributes."""
