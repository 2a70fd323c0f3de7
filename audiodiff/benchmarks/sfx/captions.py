"""Caption vocabulary and templates of the `sfx` corpus.

Every template names each of count, loudness, pitch, envelope and direction exactly once, through one of the
slot forms below (a slot is empty where the attribute does not apply to the clip's kind). The training and
held-out template sets share the slot vocabulary but no framing phrase, so a held-out caption never equals a
training caption.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from audiodiff.benchmarks.captions import fill

# Nouns as (singular, plural) and verbs (third person singular) per kind; none names an attribute value.
_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "sine": (("sine tone", ""), ("pure tone", ""), ("sine wave", "")),
    "square": (("square-wave tone", ""), ("buzzy tone", ""), ("square wave buzz", "")),
    "hum": (("engine hum", ""), ("motor drone", ""), ("humming engine", "")),
    "siren": (("siren", ""), ("wailing siren", ""), ("alarm siren", "")),
    "hiss": (("hiss", ""), ("hissing noise", ""), ("band of hiss", "")),
    "rumble": (("rumble", ""), ("rumbling noise", ""), ("thunder-like rumble", "")),
    "bell": (("bell", "bells"), ("chime", "chimes"), ("bell strike", "bell strikes")),
    "beeps": (("beep", "beeps"), ("bleep", "bleeps"), ("electronic beep", "electronic beeps")),
    "clicks": (("click", "clicks"), ("tick", "ticks"), ("sharp click", "sharp clicks")),
    "knocks": (("knock", "knocks"), ("wooden knock", "wooden knocks"), ("thump", "thumps")),
    "snare": (
        ("snare hit", "snare hits"),
        ("snare drum hit", "snare drum hits"),
        ("snare crack", "snare cracks"),
    ),
    "noise_burst": (
        ("burst of white noise", "bursts of white noise"),
        ("noise burst", "noise bursts"),
        ("blast of static", "blasts of static"),
    ),
    "sweep": (("chirp", ""), ("tone sweep", ""), ("pitch glide", ""), ("sliding tone", "")),
    "whoosh": (("whoosh", ""), ("swoosh", ""), ("rushing noise", ""), ("swish", "")),
}
_VERBS: dict[str, tuple[str, ...]] = {
    "sine": ("plays", "sounds", "rings out"),
    "square": ("buzzes", "sounds", "plays"),
    "hum": ("sounds", "idles", "runs"),
    "siren": ("wails", "sounds", "howls"),
    "hiss": ("sounds", "plays", "goes on"),
    "rumble": ("sounds", "roars", "churns"),
    "bell": ("rings", "sounds", "is struck"),
    "beeps": ("sounds", "goes off", "is heard"),
    "clicks": ("sounds", "is heard"),
    "knocks": ("sounds", "is heard"),
    "snare": ("sounds", "is heard", "rings out"),
    "noise_burst": ("sounds", "is heard", "blasts"),
    "sweep": ("glides", "slides", "moves"),
    "whoosh": ("sweeps", "swoops", "moves"),
}
# Phrasings of each attribute value, per slot form (adjective, prepositional phrase, clause, adverb, ...).
_WORDS: dict[str, dict[object, tuple[str, ...]]] = {
    "loud": {"loud": ("loud", "strong", "powerful"), "quiet": ("quiet", "soft", "faint")},
    "loudly": {"loud": ("loudly", "at full volume"), "quiet": ("quietly", "softly", "faintly")},
    "loud_pp": {
        "loud": ("at full volume", "at a loud volume"),
        "quiet": ("at a quiet volume", "at a soft volume"),
    },
    "pitch": {
        "high": ("high", "high-pitched", "shrill"),
        "mid": ("mid-pitched", "medium-pitched", "mid-range"),
        "low": ("low", "low-pitched", "deep"),
    },
    "pitch_pp": {
        "high": ("at a high pitch", "in a high register"),
        "mid": ("at a medium pitch", "in the middle register"),
        "low": ("at a low pitch", "in a low register"),
    },
    "env": {"steady": ("steady", "constant", "unwavering"), "fading": ("fading", "decaying", "dwindling")},
    "env_clause": {
        "steady": ("that stays steady", "held at a constant level", "that never fades"),
        "fading": ("that fades away", "that slowly dies out", "fading out"),
    },
    "env_and": {
        "steady": ("and stays steady", "and holds a constant level", "without fading"),
        "fading": ("and fades away", "and slowly dies out", "then fades out"),
    },
    "dir": {"rising": ("rising", "upward", "ascending"), "falling": ("falling", "downward", "descending")},
    "dir_post": {
        "rising": ("sweeping upward", "going up", "rising in pitch"),
        "falling": ("sweeping downward", "going down", "falling in pitch"),
    },
    "dir_adv": {
        "rising": ("upward", "up", "from low to high"),
        "falling": ("downward", "down", "from high to low"),
    },
    "det": {1: ("a single", "one", "just one"), 2: ("two", "a pair of"), 3: ("three", "a series of three")},
    "times": {
        1: ("once", "a single time", "just once"),
        2: ("twice", "two times"),
        3: ("three times", "thrice"),
    },
}
_SLOT_ATTRIBUTE = {
    "loud": "loudness",
    "loudly": "loudness",
    "loud_pp": "loudness",
    "pitch": "pitch",
    "pitch_pp": "pitch",
    "env": "envelope",
    "env_clause": "envelope",
    "env_and": "envelope",
    "dir": "direction",
    "dir_post": "direction",
    "dir_adv": "direction",
    "det": "count",
    "times": "count",
}

# Every template names each of count, loudness, pitch, envelope and direction once (empty where it does not
# apply). Count lives in `{det} {n}` (a count-agreeing noun phrase) or in `{times}` after `a ... {n1} {verb}`.
CAPTION_TEMPLATES_TRAIN: tuple[str, ...] = (
    "{det} {loud} {pitch} {env} {dir} {n}",
    "{det} {pitch} {env} {dir} {n}, {loud}",
    "{det} {env} {dir} {n}, {pitch}, {loud}",
    "{det} {loud} {pitch} {dir} {n} {env_clause}",
    "{det} {loud} {n} {pitch_pp} {dir_post} {env_clause}",
    "{det} {pitch} {env} {n} {dir_post} {loud_pp}",
    "the sound of {det} {loud} {pitch} {env} {dir} {n}",
    "{det} {loud} {pitch} {env} {dir} {n} can be heard",
    "a {loud} {pitch} {env} {dir} {n1} {verb} {times}",
    "a {pitch} {env} {dir} {n1} {verb} {loudly} {times}",
    "a {pitch} {n1} {verb} {dir_adv} {loudly} {times} {env_and}",
    "a {loud} {n1} {pitch_pp} {verb} {dir_adv} {times} {env_and}",
    "{det} {n}: {loud}, {pitch}, {env}, {dir}",
    "a clip of {det} {loud} {pitch} {env} {dir} {n}",
    "{det} {pitch} {dir} {n} {env_clause}, {loud}",
    "{det} {env} {n} {pitch_pp} {dir_post}, {loud}",
    "{loud} sound: {det} {pitch} {env} {dir} {n}",
    "{det} {loud} {pitch} {dir} {n} {env_clause} on a silent background",
    "a {n1} {pitch_pp} {verb} {loudly} {dir_adv} {times} {env_and}",
    "we hear {det} {loud} {pitch} {env} {dir} {n}",
    "{det} {pitch} {env} {dir} {n} played {loudly}",
    "{det} {dir} {n} {pitch_pp} {env_clause} played {loudly}",
    "a {env} {dir} {n1} {pitch_pp} {verb} {times}, {loud}",
    "sound effect of {det} {loud} {env} {n} {pitch_pp} {dir_post}",
)
CAPTION_TEMPLATES_EVAL: tuple[str, ...] = (
    "you can hear {det} {loud} {pitch} {env} {dir} {n}",
    "in this recording, a {pitch} {env} {dir} {n1} {verb} {loudly} {times}",
    "listen to {det} {loud} {n} {pitch_pp} {dir_post} {env_clause}",
    "somewhere, a {loud} {pitch} {dir} {n1} {verb} {times} {env_and}",
    "an audio clip containing {det} {pitch} {env} {dir} {n}, {loud}",
    "{det} {n} ({loud}, {pitch}, {env}, {dir})",
    "recorded effect: {det} {loud} {pitch} {env} {dir} {n}",
    "out of nowhere, {det} {pitch} {env} {dir} {n} {loud_pp}",
    "this clip has {det} {env} {dir} {n} {pitch_pp}, {loud}",
    "suddenly, a {n1} {pitch_pp} {verb} {dir_adv} {loudly} {times} {env_and}",
)


def caption_choices(attributes: dict, rng: np.random.Generator,
                    nouns: Mapping[str, tuple[tuple[str, str], ...]] = _NOUNS,
                    verbs: Mapping[str, tuple[str, ...]] = _VERBS) -> dict[str, tuple[str, ...]]:
    """Phrasings for every template slot given a clip's attributes ("" choices where an attribute is absent).

    The noun is drawn once here (with `rng`) so that `{n}` and `{n1}` agree within one caption. `nouns` and `verbs`
    name the kinds (another set of kinds brings its own, in the same form).
    """
    kind = attributes["kind"]
    singular, plural = nouns[kind][int(rng.integers(len(nouns[kind])))]
    count = attributes.get("count")
    choices: dict[str, tuple[str, ...]] = {
        "n": (plural if count is not None and count > 1 else singular,),
        "n1": (singular,),
        "verb": verbs[kind],
    }
    for slot, name in _SLOT_ATTRIBUTE.items():
        value = attributes.get(name)
        choices[slot] = _WORDS[slot][value] if value is not None else ()
    if count is None:
        choices["det"] = ("a",)
    return choices


def caption_for(attributes: dict, rng: np.random.Generator, held_out: bool,
                nouns: Mapping[str, tuple[tuple[str, str], ...]] = _NOUNS,
                verbs: Mapping[str, tuple[str, ...]] = _VERBS) -> str:
    """One caption for a valid sfx attribute dict (see `audiodiff.benchmarks.sfx.corpus.render_caption`)."""
    templates = CAPTION_TEMPLATES_EVAL if held_out else CAPTION_TEMPLATES_TRAIN
    template = templates[int(rng.integers(len(templates)))]
    return fill(template, caption_choices(attributes, rng, nouns, verbs), rng)
