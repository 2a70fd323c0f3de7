"""audiodiff.diffusion."""
