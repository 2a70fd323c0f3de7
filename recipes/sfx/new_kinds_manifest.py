"""The fine-tuning set for teaching a model the two new kinds (trill, drips), with base-corpus rows replayed.

    python recipes/sfx/new_kinds_manifest.py --out data/sfx_new_kinds [--replay 240] [--seed 0]

Builds `audiodiff.benchmarks.sfx.new_kinds` into OUT (60 train, 10 val, 100 test clips per kind) and writes
OUT/finetune.jsonl: the new kinds' train and val rows plus `--replay` training rows of the built-in sfx corpus drawn
at random (seeded), every audio path absolute. Train on it with
`python -m audiodiff.train recipe=finetune init=<export> data=manifest data.manifest=OUT/finetune.jsonl`; score with
`recipes/sfx/eval_new_kinds.py` (the new kinds) and `recipes/sfx/eval_adherence.py` (forgetting).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from audiodiff.benchmarks import ensure_corpus
from audiodiff.benchmarks.sfx import new_kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/sfx_new_kinds")
    parser.add_argument("--replay", type=int, default=240, help="base-corpus training rows to mix in")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="data", help="where the built-in sfx corpus is (built if missing)")
    args = parser.parse_args()

    out = Path(args.out)
    manifest = new_kinds.build(out, seed=args.seed)
    new = [json.loads(line) for line in manifest.read_text().splitlines()]
    new = [{**r, "audio": str((out / r["audio"]).resolve())} for r in new if r["split"] in ("train", "val")]
    base_manifest = ensure_corpus("sfx", args.root)
    base = [json.loads(line) for line in base_manifest.read_text().splitlines()]
    train = [r for r in base if r["split"] == "train"]
    random.Random(args.seed).shuffle(train)
    replay = [{**r, "audio": str((base_manifest.parent / r["audio"]).resolve())} for r in train[:args.replay]]
    target = out / "finetune.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in new + replay))
    print(f"{target}: {len(new)} new-kind rows (train and val) and {len(replay)} replayed sfx training rows")


if __name__ == "__main__":
    main()
