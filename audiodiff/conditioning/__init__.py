"""audiodiff.conditioning."""
