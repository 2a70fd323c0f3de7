"""audiodiff: latent audio diffusion toolkit."""

from audiodiff import _moved

__version__ = "0.2.0"

_moved.install()  # module names from before the layered layout stay importable for one release, with a warning
