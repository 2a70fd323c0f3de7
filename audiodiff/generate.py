"""`python -m audiodiff.generate model=<export folder or run> prompt="..." seed=0 out=outputs/`.

Prompts come from `prompt=` or a file (`prompts=prompts.txt`: one per line; `prompts=prompts.jsonl`: one object per
line with "prompt" and optionally "negative_prompt", "duration", "seed", "n"). Each clip is written as wav or flac
with a JSON sidecar (prompt, seed, sampler settings, duration, model, mode, watermark). Every clip carries an
imperceptible watermark (`audiodiff.watermark`; check files with `python -m audiodiff.watermark detect FILES`)
unless `watermark=false`, which the sidecar records as `"watermark": false`. `prompt_policy=<file.json|.yaml>`
refuses prompts by word, pattern or named rule (`audiodiff.pipeline.policy`) before anything is generated; a refused
line of a prompts file is named. `guard.near_copy=true` compares each clip with the index of the model's training set
(`python -m audiodiff.guard index ...` builds it into the export folder) and generates a near copy again from another
seed (`guard.on_copy=regenerate`, up to `guard.tries` seeds) or refuses it (`guard.on_copy=refuse`), naming the
training clip; the clips that pass are written, then the refusals end the command with an error. With `audio=<file>`
the clip is edited
instead: `strength=` makes a variation, `inpaint=[start,end]` regenerates that range, `extend=<seconds>` continues
it; `long_form=true` builds durations beyond the model's window from overlapping windows. Every request is checked
before anything is generated or written.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiodiff import cli
from audiodiff.utils import settings as checked

log = logging.getLogger(__name__)

ROW_FIELDS = {"prompt": str, "negative_prompt": str, "duration": (int, float), "seed": int, "n": int}


@dataclass(frozen=True)
class Request:
    """One clip to generate."""

    prompt: str
    seed: int
    negative_prompt: str | None = None
    duration: float | None = None  # seconds; None = the model's (or the command's) default


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "clip"


def read_prompts(path: str | Path, policy: Any = None) -> list[dict[str, Any]]:
    """Rows {"prompt": ..., optional "negative_prompt", "duration", "seed", "n"} from a .txt file (one prompt per
    line; blank lines and lines starting with # are skipped) or a .jsonl file (one JSON object per line).
    Raises ValueError naming the file, line and field of the first bad row; with a `policy`
    (`audiodiff.pipeline.policy.PromptPolicy`), PromptRefused naming the file, line and rule of a refused prompt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts: {path} does not exist")
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts: {path} is not UTF-8 text (byte {err.start}: {err.reason})") from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (path.suffix != ".jsonl" and line.lstrip().startswith("#")):
            continue
        if path.suffix != ".jsonl":
            if policy is not None:
                policy.check(line.strip(), f"{path}:{number}")
            rows.append({"prompt": line.strip()})
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            raise ValueError(f"{path}:{number}: unknown field(s) {unknown}; expected some of {sorted(ROW_FIELDS)}")
        for field, kind in ROW_FIELDS.items():
            value = row.get(field)
            if (field == "prompt" and value is None) or (value is not None and (
                    not isinstance(value, kind) or isinstance(value, bool))):
                raise ValueError(f"{path}:{number}: field {field!r}: expected {getattr(kind, '__name__', 'number')}, "
                                 f"got {value!r}")
        if row.get("n", 1) < 1:
            raise ValueError(f"{path}:{number}: field 'n': expected at least 1, got {row['n']}")
        if policy is not None:
            policy.check(row["prompt"], f"{path}:{number}")
        rows.append(row)
    if not rows:
        raise ValueError(f"prompts: {path} holds no prompts")
    return rows


def plan(rows: list[dict[str, Any]], seed: int, n: int, negative_prompt: str | None,
         duration: float | None) -> list[Request]:
    """Expand rows into requests: row i's variation v uses seed (row seed, else `seed + i`) + v · len(rows);
    row fields override the command's negative prompt and duration; a row's "n" overrides `n`."""
    requests = []
    for i, row in enumerate(rows):
        base = row.get("seed", seed + i)
        for v in range(int(row.get("n", n))):
            requests.append(Request(row["prompt"], base + v * len(rows), row.get("negative_prompt", negative_prompt),
                                    row.get("duration", duration)))
    return requests


def batches(requests: list[Request], size: int) -> list[list[Request]]:
    """Consecutive requests of the same duration, at most `size` per batch, in order."""
    out: list[list[Request]] = []
    for request in requests:
        if out and len(out[-1]) < size and out[-1][0].duration == request.duration:
            out[-1].append(request)
        else:
            out.append([request])
    return out


def prompt_policy(cfg: DictConfig) -> Any:
    """The PromptPolicy of `prompt_policy=<file.json|.yaml>`, or None (no filtering, the default)."""
    from audiodiff.pipeline.policy import PromptPolicy

    path = cfg.get("prompt_policy")
    return None if path is None else PromptPolicy.from_file(str(path))


def near_copy_guard(cfg: DictConfig, model: str) -> Any:
    """The NearCopyGuard of `guard.near_copy=true` (the index in `guard.index`, default the model's export folder;
    `guard.on_copy`, `guard.tries`, optional `guard.threshold`), or None (the default: outputs are not checked)."""
    options = cfg.get("guard") or {}
    if not checked.flag(options, "near_copy"):
        return None
    from audiodiff.guard import NearCopyGuard

    index = options.get("index") or model
    return NearCopyGuard.from_export(str(index), on_copy=str(options.get("on_copy") or "regenerate"),
                                     tries=checked.whole(options, "tries", minimum=0) or 0,
                                     threshold=checked.number(options, "threshold"), device=str(cfg.device))


def _rows(cfg: DictConfig, policy: Any = None) -> list[dict[str, Any]]:
    if cfg.get("prompts") is not None and cfg.prompt is not None:
        raise ValueError("give either prompt= or prompts=<file>, not both")
    if cfg.get("prompts") is not None:
        return read_prompts(cfg.prompts, policy)
    if cfg.prompt is None:
        raise ValueError("prompt: expected prompt=\"...\" or prompts=<file.txt|file.jsonl>, got neither")
    prompts = [cfg.prompt] if isinstance(cfg.prompt, str) else list(cfg.prompt)
    return [{"prompt": str(p)} for p in prompts]


def _mode(cfg: DictConfig) -> str:
    """generate | variation | inpaint | continuation | long_form, from which options are set."""
    edits = [k for k in ("strength", "inpaint", "extend") if cfg.get(k) is not None]
    if len(edits) > 1:
        raise ValueError(f"choose one edit of the input audio, got {edits}")
    if edits and cfg.get("audio") is None:
        raise ValueError(f"{edits[0]}= edits an input clip: give audio=<file>")
    if cfg.get("audio") is not None and not edits:
        raise ValueError("audio=<file> needs strength= (variation), inpaint=[start,end] or extend=<seconds>")
    if cfg.get("long_form") and edits:
        raise ValueError("long_form=true generates from a prompt; to lengthen a clip use audio=… extend=…")
    if cfg.get("long_form"):
        if cfg.duration is None:
            raise ValueError("long_form=true needs duration=<seconds>")
        return "long_form"
    return {"strength": "variation", "inpaint": "inpaint", "extend": "continuation"}.get(edits[0] if edits else "",
                                                                                          "generate")


def adapter_specs(value: Any) -> list[tuple[str, float]]:
    """(path, strength) for each `adapter=` entry: `path` (strength 1) or `path:strength`."""
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else list(value)
    specs = []
    for entry in entries:
        path, _, tail = str(entry).rpartition(":")
        try:
            specs.append((path, float(tail)) if path else (str(entry), 1.0))
        except ValueError:
            specs.append((str(entry), 1.0))
    return specs


def watermark_option(cfg: DictConfig) -> Any:
    """False when `watermark=false`, else the Watermarker `watermark_method=` and `watermark_key=` name (the
    built-in spectral method and the public key by default)."""
    from audiodiff.watermark import watermarker

    if cfg.get("watermark") is not None and not checked.flag(cfg, "watermark"):
        return False
    key = cfg.get("watermark_key")
    return watermarker(str(cfg.get("watermark_method") or "spectral"), None if key is None else str(key))


def c2pa_signing(cfg: DictConfig) -> tuple[bytes, bytes] | None:
    """(certificate chain, private key) PEM bytes when `c2pa_cert=` and `c2pa_key=` are given (a C2PA manifest is
    then signed into every WAV written), None when neither is; ValueError when only one is, the format is not wav,
    or c2pa-python is missing."""
    cert, key = cfg.get("c2pa_cert"), cfg.get("c2pa_key")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("c2pa_cert and c2pa_key: give both (a PEM certificate chain and its private key), or neither")
    if cfg.format != "wav":
        raise ValueError(f"c2pa_cert: C2PA manifests are signed into wav files; got format={cfg.format}")
    from audiodiff.pipeline.c2pa_manifest import check_signing

    return check_signing(str(cert), str(key), str(cfg.get("c2pa_alg") or "es256"))


def run(cfg: DictConfig) -> list[Path]:
    """Generate as `cfg` says; returns the written audio files."""
    from tqdm.auto import tqdm

    from audiodiff.pipeline import AudioDiffusionPipeline, NearCopyRefused
    from audiodiff.pipeline.provenance import provenance

    for key in ("steps", "seed", "n", "batch_size"):
        checked.whole(cfg, key)
    for key in ("guidance", "duration", "loudness", "strength", "extend", "context"):
        checked.number(cfg, key)
    model = model_path(cfg)
    if cfg.format not in ("wav", "flac"):
        raise ValueError(f"format: expected wav or flac, got {cfg.format!r}")
    if int(cfg.batch_size) < 1 or int(cfg.n) < 1:
        raise ValueError(f"batch_size and n: expected at least 1, got {cfg.batch_size} and {cfg.n}")
    mode = _mode(cfg)
    policy = prompt_policy(cfg)
    requests = plan(_rows(cfg, policy), int(cfg.seed), int(cfg.n), cfg.get("negative_prompt"), cfg.duration)
    guard = near_copy_guard(cfg, model)
    if guard is not None and mode != "generate":
        raise ValueError(f"guard.near_copy=true checks text-to-audio generation; {mode} is not checked (drop the "
                         f"guard or the edit)")
    pipe = AudioDiffusionPipeline.from_pretrained(model, device=cfg.device, watermark=watermark_option(cfg),
                                                  near_copy_guard=guard)
    pipe.prompt_policy = policy
    pipe.check_channels(checked.whole(cfg, "channels", minimum=1))
    adapters = adapter_specs(cfg.get("adapter"))
    for path, strength in adapters:
        pipe.load_adapter(path, strength, force=checked.flag(cfg, "force_adapter"))
    # sampler=<preset> selects a conf/sampler/ group: its settings apply unless steps=/guidance= say otherwise.
    preset = OmegaConf.to_container(cfg.sampler, resolve=True) if cfg.get("sampler") else {}
    name = preset.pop("name", None)
    steps = cfg.steps if cfg.steps is not None else preset.get("steps")
    guidance = cfg.guidance if cfg.guidance is not None else preset.get("guidance")
    preset.pop("steps", None), preset.pop("guidance", None)
    options = {**preset, **dict(cfg.get("sampler_options") or {})}
    # Every check happens before anything is generated or written.
    settings = pipe.settings(steps, guidance, name, **options)
    for request in requests:
        pipe.check_request([request.prompt], None if mode == "long_form" else request.duration, None)
    audio = pipe.load_input(cfg.audio, 1) if cfg.get("audio") is not None else None
    target = cfg.get("loudness")
    if target is not None and not -70.0 <= float(target) <= 0.0:
        raise ValueError(f"loudness: expected a target between -70 and 0 LUFS, got {target}")
    signing = c2pa_signing(cfg)

    out_dir = Path(cfg.out)
    written: list[Path] = []
    used: set[str] = set()
    refusals: list[str] = []
    with tqdm(total=len(requests), desc="generating", unit="clip") as bar:
        for batch in batches(requests, int(cfg.batch_size)):
            prompts = [r.prompt for r in batch]
            negative = None if all(r.negative_prompt is None for r in batch) else [r.negative_prompt or ""
                                                                                   for r in batch]
            common = dict(steps=settings.steps, guidance=settings.guidance, seed=[r.seed for r in batch],
                          sampler=settings.name, negative_prompts=negative, **options)
            try:
                result, refused = _generate(pipe, mode, cfg, audio, prompts, batch[0].duration, common), ()
            except NearCopyRefused as err:  # write the clips that passed; the refusals end the command
                result, refused = err.output, err.refused
                refusals.append(str(err))
            for i, request in enumerate(batch):
                if i in refused:
                    continue
                stem = base = f"{slug(request.prompt)}_seed{request.seed}"
                while stem in used:  # the same prompt and seed twice (e.g. another duration): number the copies
                    stem = f"{base}_{len([u for u in used if u.startswith(base)])}"
                used.add(stem)
                wav, sidecar = result.audio[i], _sidecar(result, request, i, pipe.model_id, mode, cfg)
                sidecar.update(provenance(pipe.base_hash))
                if adapters:
                    sidecar["adapters"] = [{"path": path, "strength": strength} for path, strength in adapters]
                if target is not None:
                    wav, sidecar["loudness"] = _normalise(wav, result.sample_rate, float(target))
                else:
                    wav, gain = guard_peak(wav)
                    if gain != 1.0:
                        sidecar["gain"] = gain
                path = _write(out_dir / f"{stem}.{cfg.format}", wav, result.sample_rate, sidecar)
                if signing is not None:
                    from audiodiff.pipeline.c2pa_manifest import sign_file

                    sign_file(path, sidecar, *signing, alg=str(cfg.get("c2pa_alg") or "es256"))
                written.append(path)
                log.info("wrote %s", path)
            bar.update(len(batch))
    if refusals:
        raise NearCopyRefused(f"{len(written)} clip(s) written to {out_dir}; " + "; ".join(refusals))
    return written


def _generate(pipe: Any, mode: str, cfg: DictConfig, audio: Any, prompts: list[str], duration: float | None,
              common: dict[str, Any]) -> Any:
    if mode == "variation":
        return pipe.variation(audio, prompts, strength=float(cfg.strength), **common)
    if mode == "inpaint":
        start, end = (float(v) for v in cfg.inpaint)
        return pipe.inpaint(audio, prompts, start, end, **common)
    if mode == "continuation":
        return pipe.continuation(audio, prompts, float(cfg.extend), context=cfg.get("context"), **common)
    if mode == "long_form":
        return pipe.long_form(prompts, float(duration), context=cfg.get("context"), **common)
    return pipe(prompts, duration=duration, **common)


def _sidecar(result: Any, request: Request, index: int, model_id: str, mode: str,
             cfg: DictConfig) -> dict[str, Any]:
    from audiodiff.pipeline import describe

    meta = describe(result, request.prompt, index, model_id)
    if request.negative_prompt is not None:
        meta["negative_prompt"] = request.negative_prompt
    if mode != "generate":
        meta["mode"] = mode
        edit = {"variation": "strength", "inpaint": "inpaint", "continuation": "extend"}.get(mode)
        if edit:
            value = cfg.get(edit)
            meta[edit] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            meta["audio"] = str(cfg.audio)
    return meta


def _normalise(wav: Any, sample_rate: int, target: float) -> tuple[Any, dict[str, float | None]]:
    """wav scaled to `target` LUFS (peak at most 0.99, which wins); returns it and the loudness record."""
    from audiodiff.audio.loudness import integrated_loudness, normalize_loudness

    wav = normalize_loudness(wav, sample_rate, target_lufs=target)
    reached = integrated_loudness(wav, sample_rate)
    return wav, {"target_lufs": target, "lufs": reached if math.isfinite(reached) else None}


def guard_peak(wav: Any, peak: float = 0.99) -> tuple[Any, float]:
    """wav ``[C, T]`` scaled down to `peak` if any sample reaches full scale (1.0), which integer PCM would clip;
    returns it and the gain applied (1.0: left alone)."""
    top = float(wav.abs().max()) if wav.numel() else 0.0
    if top < 1.0:
        return wav, 1.0
    gain = peak / top
    return wav * gain, gain


def _write(path: Path, wav: Any, sample_rate: int, sidecar: dict[str, Any]) -> Path:
    """Audio (its metadata holding the sidecar's provenance fields), then its sidecar, each written to a temporary
    name and renamed (never half-written)."""
    from audiodiff.audio.io import save_audio
    from audiodiff.pipeline.provenance import file_tags
    from audiodiff.utils.files import write_json

    save_audio(path, wav, sample_rate, tags=file_tags(sidecar))
    write_json(path.with_suffix(".json"), sidecar, indent=2, ensure_ascii=True)
    return path


def model_path(cfg: DictConfig) -> str:
    """The export folder to load: `model=` (an export folder or run directory; a training checkpoint, or a run
    that has not exported yet, is exported to a temporary folder first), else the export of the seed-0 run of
    `recipe=`; ValueError when neither is given."""
    if cfg.model is not None:
        return exported(Path(cfg.model))
    if cfg.get("recipe") is not None:
        export = cli.recipe_run_dir(cfg.recipe) / "export"
        if not export.is_dir():
            raise FileNotFoundError(f"recipe={cfg.recipe}: {export} does not exist; train it first "
                                    f"(python -m audiodiff.train recipe={cfg.recipe}) or give model=<folder>")
        return str(export)
    raise ValueError("model: expected an export folder, run directory or .ckpt (model=...) or recipe=<name> "
                     "(that recipe's trained run), got neither")


def exported(path: Path) -> str:
    """`path` when it is an export folder or a run directory holding one; for a training checkpoint (or a run
    directory whose training has not exported), its EMA weights exported to a temporary folder, removed when the
    process ends."""
    from audiodiff.models.export_format import WEIGHTS

    is_checkpoint = path.is_file() or (path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file()
                                       and not (path / WEIGHTS).exists() and not (path / "export" / WEIGHTS).exists())
    if not is_checkpoint:
        return str(path)
    import atexit
    import shutil
    import tempfile

    from audiodiff.training.checkpoints import export_run

    folder = tempfile.mkdtemp(prefix="audiodiff-export-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = Path(folder) / "export"
    log.info("%s is a training checkpoint: exporting its EMA weights to %s", path, out)
    return str(export_run(path, out))


def main(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    for path in run(cfg):
        print(path)


if __name__ == "__main__":
    cli.main("audiodiff.generate", "generate", main, __doc__)
