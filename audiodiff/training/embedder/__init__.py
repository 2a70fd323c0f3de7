"""The contrastive embedder stage: its task, caption cache, run and export."""
