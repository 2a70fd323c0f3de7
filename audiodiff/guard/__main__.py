"""`python -m audiodiff.guard index model=<export folder> manifest=<manifest.jsonl> [split=train] [embedder=logmel]
[quantile=0.999] [out=<folder>]`.

Embeds the manifest's `split` rows (the model's training clips) and writes the near-copy index
(`near_copy_index.safetensors` + `near_copy_index.json`) into the export folder (or `out`), with the threshold
calibrated at `quantile` of the clips' leave-one-out nearest-neighbour similarity. `embedder`: `logmel` (fixed, no
download; the default) or the folder of a contrastive embedder export. Then generate with `guard.near_copy=true`.
Exit status 0 on success, 2 for bad arguments, 1 when the index could not be built (the reason is printed).
"""

from __future__ import annotations

import sys

KEYS = {"model": str, "manifest": str, "split": str, "embedder": str, "quantile": float, "out": str,
        "seconds": float}


def parse(argv: list[str]) -> dict[str, object]:
    """`index key=value ...` → the keyword arguments of `index_manifest`; ValueError naming a bad argument."""
    if not argv or argv[0] != "index":
        raise ValueError("expected the command 'index', e.g. python -m audiodiff.guard index model=<export folder> "
                         "manifest=<manifest.jsonl>")
    options: dict[str, object] = {}
    for arg in argv[1:]:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise ValueError(f"{arg!r}: expected key=value with key one of {sorted(KEYS)}")
        try:
            options[key] = KEYS[key](value)
        except ValueError:
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    missing = [k for k in ("model", "manifest") if k not in options]
    if missing:
        raise ValueError(f"missing {' and '.join(f'{k}=' for k in missing)}")
    if options.get("split") in ("all", "none"):
        options["split"] = None
    return options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        options = parse(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from audiodiff.guard.index import NearCopyIndex, index_manifest

    try:
        path = index_manifest(**options)  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    index = NearCopyIndex.load(path.parent)
    print(f"wrote {path} ({len(index.clips)} clips, {index.embedder['name']} embeddings, threshold "
          f"{index.threshold:.4f} at quantile {index.quantile}; {len(index.skipped)} silent clips left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
