"""audiodiff.data.corpora."""
