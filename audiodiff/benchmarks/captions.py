"""Caption templates: `str.format` patterns whose slots are filled with randomly chosen synonyms.

A slot that does not apply to a clip (say, `{count}` for a held tone) is filled with "" and `tidy` removes the
gap it leaves, so one template can serve clips with different sets of attributes.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_REPEATED_COMMAS = re.compile(r",(\s*,)+")
_EMPTY_IN_PARENS = (re.compile(r"\(\s*,\s*"), re.compile(r",\s*\)"), re.compile(r"\s*\(\s*\)"))
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def template_slots(template: str) -> tuple[str, ...]:
    """Names of the `{slot}` fields in `template`, in order of first appearance."""
    return tuple(dict.fromkeys(name for _, name, _, _ in string.Formatter().parse(template) if name))


def tidy(text: str) -> str:
    """Collapse whitespace and stray commas left by empty slots, and write "an" before a vowel."""
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_COMMAS.sub(",", text)
    opening, closing, empty = _EMPTY_IN_PARENS
    text = empty.sub("", closing.sub(")", opening.sub("(", text)))
    text = text.strip(" ,")
    text = text.replace(", .", ".").replace(",.", ".")
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)


def fill(template: str, choices: Mapping[str, Sequence[str]], rng: np.random.Generator) -> str:
    """Fill each slot of `template` with one entry of `choices[slot]`, drawn uniformly; `tidy` the result.

    A slot whose choices are empty becomes "" (the attribute does not apply); a slot absent from `choices`
    raises KeyError naming the template and the slot.
    """
    values: dict[str, str] = {}
    for name in template_slots(template):  # template order, so the draws do not depend on string hashing
        if name not in choices:
            raise KeyError(f"template {template!r}: no choices for slot {name!r}")
        options = choices[name]
        values[name] = options[int(rng.integers(len(options)))] if options else ""
    return tidy(template.format(**values))
