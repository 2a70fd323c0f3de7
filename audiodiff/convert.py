"""`python -m audiodiff.convert FORMAT SRC OUT [text_encoder=PATH]`: convert a published model folder into an
audiodiff export folder, which `AudioDiffusionPipeline.from_pretrained(OUT)` loads without the source's library.

FORMAT stable-audio-open: SRC is Stable Audio Open in diffusers' folder layout (transformer/, vae/, text_encoder/,
tokenizer/, projection_model/, scheduler/) or stable-audio-tools' pair (model_config.json + model.safetensors or
model.ckpt), which holds no T5 weights: text_encoder=PATH names a transformers T5 folder with its tokenizer.
FORMAT stable-audio-3: SRC is Stable Audio 3 in diffusers' folder layout (transformer/, vae/, text_encoder/,
tokenizer/, duration_embedder/, scheduler/); text_encoder=PATH replaces its T5Gemma folder.
The three positional words are shorthand for format=, src= and out=.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from audiodiff import cli
from audiodiff.models.published import FAMILIES, convert

FORMATS = tuple(FAMILIES)
POSITIONAL = ("format", "src", "out")


def main(cfg: Any, overrides: list[str] | None = None) -> None:
    """Convert what `cfg` (conf/convert.yaml) names and print the export folder."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {cfg.format!r}")
    print(convert(cfg.format, cfg.src, cfg.out, text_encoder=cfg.text_encoder))


def as_overrides(argv: Sequence[str]) -> list[str]:
    """The command line with its leading positional words (format, SRC, OUT) turned into format=, src=, out=."""
    args, words = [], list(POSITIONAL)
    for arg in argv:
        if words and "=" not in arg and not arg.startswith("-"):
            args.append(f"{words.pop(0)}={arg}")
        else:
            args.append(arg)
    return args


if __name__ == "__main__":
    raise SystemExit(cli.run("audiodiff.convert", "convert", main, __doc__, as_overrides(sys.argv[1:])))
