"""Kind accuracy of a model on held-out prompts of the new kinds (trill, drips), at guidance 3.

    python recipes/sfx/eval_new_kinds.py MODEL [--data data/sfx_new_kinds]

One prompt per test clip of the new-kinds set (its first held-out caption, 100 per kind), generated at the longest
clip length of its batch (25 flow Heun steps, seeds 0, 1, ...), and read back by
`audiodiff.benchmarks.sfx.new_kinds_attributes.extract_with_new_kinds` over the clip's own length. Prints per kind
the accuracy and what the clips were heard as.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from audiodiff.benchmarks.sfx.new_kinds import NEW_KINDS
from audiodiff.benchmarks.sfx.new_kinds_attributes import extract_with_new_kinds
from audiodiff.pipeline import AudioDiffusionPipeline

BATCH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="export folder or run directory")
    parser.add_argument("--data", default="data/sfx_new_kinds", help="folder recipes/sfx/new_kinds_manifest.py built")
    parser.add_argument("--guidance", type=float, default=3.0)
    args = parser.parse_args()

    pipe = AudioDiffusionPipeline.from_pretrained(args.model)
    rows = [json.loads(line) for line in (Path(args.data) / "manifest.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    start = time.time()
    heard = {kind: Counter() for kind in NEW_KINDS}
    for i in range(0, len(test), BATCH):
        chunk = test[i:i + BATCH]
        out = pipe([r["caption"][0] for r in chunk], duration=max(r["duration"] for r in chunk), steps=25,
                   guidance=args.guidance, seed=list(range(i, i + len(chunk))))
        for row, clip in zip(chunk, out.audio, strict=True):
            samples = int(row["duration"] * pipe.sample_rate)
            got = extract_with_new_kinds(clip[0, :samples].numpy(), pipe.sample_rate)
            heard[row["attributes"]["kind"]][got["kind"]] += 1
    for kind, counts in heard.items():
        total = sum(counts.values())
        print(f"{kind}: kind accuracy {counts[kind]}/{total} ({100 * counts[kind] / max(total, 1):.0f}%); "
              f"heard as {dict(counts.most_common(4))}")
    print(f"({time.time() - start:.0f} s, {args.model})")


if __name__ == "__main__":
    main()
