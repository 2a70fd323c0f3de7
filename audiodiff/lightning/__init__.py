"""audiodiff.lightning."""
