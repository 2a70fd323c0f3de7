"""Generation-time near-copy guard: an index of a training set's embeddings stored with the model's export, and the
guard that compares each output with it (`guard.near_copy=true` for generate and serve).

    python -m audiodiff.guard index model=<export folder> manifest=<training manifest.jsonl>
"""

from audiodiff.guard.index import MissingIndexError, NearCopyIndex, build_index, index_manifest
from audiodiff.guard.near_copy import NearCopyGuard

__all__ = ["MissingIndexError", "NearCopyGuard", "NearCopyIndex", "build_index", "index_manifest"]
