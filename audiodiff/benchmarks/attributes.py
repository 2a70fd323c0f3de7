"""Attribute extractors for the built-in corpora: read a clip's attributes back from its audio.

`corpus_metrics(name)` gives a corpus's `(extract, score)` pair:
`extract(wav [C, T], sample_rate) -> dict` (C = 1, or 2 for `sfx_stereo`; mono extractors also take `[T]`) and
`score(predicted, truth) -> {attribute: {accuracy, n, chance}}`. Each corpus's
`audiodiff.benchmarks.<name>.attributes` defines both; the registry below names them.
`asked_attributes(name, caption, attributes)` is the truth to score a clip generated from `caption` against:
the clip's attributes that the caption states.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from audiodiff.benchmarks.score import markdown_table, score_predictions

Extractor = Callable[..., dict]
Scorer = Callable[[list[dict], list[dict]], dict[str, dict[str, float]]]

# corpus → (module, extractor function, scoring function)
CORPUS_METRICS: dict[str, tuple[str, str, str]] = {
    "sfx": ("audiodiff.benchmarks.sfx.attributes", "extract_sfx", "score_attributes"),
    "sfx_stereo": ("audiodiff.benchmarks.sfx.stereo_attributes", "extract_sfx_stereo", "score_stereo"),
    "music": ("audiodiff.benchmarks.music.attributes", "extract_music", "score_music"),
}


# corpus → (module, function) giving the attributes a caption states; corpora not listed state all of them.
ASKED_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "music": ("audiodiff.benchmarks.music.attributes", "asked_music"),
}


def asked_attributes(name: str, caption: str, attributes: dict) -> dict:
    """The attributes of a clip of corpus `name` that `caption` asks for (a copy of `attributes`, perhaps less)."""
    if name not in ASKED_ATTRIBUTES:
        return dict(attributes)
    module_name, function = ASKED_ATTRIBUTES[name]
    return getattr(importlib.import_module(module_name), function)(caption, attributes)


def corpus_metrics(name: str) -> tuple[Extractor, Scorer]:
    """The attribute extractor and scorer of built-in corpus `name`."""
    if name not in CORPUS_METRICS:
        raise ValueError(
            f"corpus: no attribute extractors for {name!r}; expected one of {sorted(CORPUS_METRICS)}"
        )
    module_name, extract, score = CORPUS_METRICS[name]
    module = importlib.import_module(module_name)
    return getattr(module, extract), getattr(module, score)


__all__ = ["ASKED_ATTRIBUTES", "CORPUS_METRICS", "asked_attributes", "corpus_metrics", "markdown_table",
           "score_predictions"]
