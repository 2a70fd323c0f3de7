"""Building a stage's data module from its configuration node."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate

from audiodiff.benchmarks import ensure_corpus


def build_datamodule(node: Any, **kwargs: Any) -> Any:
    """The data module a `data` node describes; one that reads a built-in corpus gets the builder that synthesises
    the corpus on first use (`audiodiff.benchmarks.ensure_corpus`, called once per node by Lightning's
    `prepare_data`)."""
    if node.get("corpus"):
        kwargs["corpus_builder"] = ensure_corpus
    return instantiate(node, **kwargs)
