"""`python -m audiodiff.watermark detect FILES... [--method spectral|audioseal] [--key TEXT]`.

Prints one line per file: its path, "marked" or "not marked", the score, the p-value and, when marked, the message
(hex; the built-in pipeline writes the first 16 bits of the model's content hash). Exit status 0 when every file
was read, 1 when a file could not be (named on its line), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys


def detect_lines(files: list[str], method: str = "spectral", key: str | None = None) -> tuple[list[str], bool]:
    """One line per file, and whether every file could be read."""
    from audiodiff.audio.errors import AudioError
    from audiodiff.audio.io import load_audio
    from audiodiff.watermark import watermarker

    mark = watermarker(method, key)
    lines, ok = [], True
    for path in files:
        try:
            wav, rate = load_audio(path)
        except (AudioError, OSError) as err:
            lines.append(f"{path}: error: {err}")
            ok = False
            continue
        found = mark.detect(wav, rate)
        verdict = "marked" if found.marked else "not marked"
        line = f"{path}: {verdict} (score {found.score:.2f}, p-value {found.p_value:.2g}, method {found.method})"
        if found.bits is not None:
            line += f" message {found.message_hex}"
        if found.note:
            line += f" [{found.note}]"
        lines.append(line)
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiodiff.watermark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    detect = commands.add_parser("detect", help="check files for the watermark")
    detect.add_argument("files", nargs="+")
    detect.add_argument("--method", default="spectral", choices=["spectral", "audioseal"])
    detect.add_argument("--key", default=None, help="the key the clips were marked with (default: the public key)")
    args = parser.parse_args(argv)
    from audiodiff.watermark import WatermarkError

    try:
        lines, ok = detect_lines(args.files, args.method, args.key)
    except WatermarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
