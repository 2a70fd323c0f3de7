"""audiodiff: latent audio diffusion toolkit."""

__version__ = "0.1.0"
