"""The lowest layer: atomic file writes, content hashes, checked settings and the package's paths."""
