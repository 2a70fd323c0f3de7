"""An offline audio embedder trained by the toolkit: a small contrastive audio–text model (CLAP-style).

Train with `python -m audiodiff.training.embedder.run [data=music]`, load the export with `load_embedder`;
audio embeddings serve FAD and near-copy search, audio–text cosines the prompt-adherence score.
"""

from audiodiff.evaluation.embedders.contrastive.embedder import ContrastiveEmbedder, load_embedder

__all__ = ["ContrastiveEmbedder", "load_embedder"]
