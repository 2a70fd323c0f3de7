"""What holds each attribute of the music presets back: the measurements behind `recipes/music/README.md`.

    python recipes/music/diagnose.py corpus                    # tempo and instrument statistics of the corpus
    python recipes/music/diagnose.py extractors --n 100        # extractor accuracy: clean, mel → Griffin-Lim
    python recipes/music/diagnose.py tempo --n 100             # tempo reading against the window length
    python recipes/music/diagnose.py denoiser EXPORT --n 70    # what a model's denoiser keeps of real clips
    python recipes/music/diagnose.py style EXPORT --n 200      # which style its clips are heard as, and why
    python recipes/music/diagnose.py roles EXPORT --n 200      # instruments: wrong timbre, or the roles swapped
    python recipes/music/diagnose.py text                      # what the text encoder keeps of each attribute

Nothing here trains a model. `extractors` reads the first `n` test clips of `data/music` back with the corpus
extractors (`audiodiff.benchmarks.music.attributes`) as they are, after the `music_quick` representation round trip
(64-band log-mel at 16 kHz → Griffin-Lim, 32 iterations), after a wider mel (`--mels 64 128`), and with `--stft`
after Griffin-Lim from the clip's own STFT magnitude (the bound of any mel vocoder that leaves the phase to
Griffin-Lim). `tempo` renders the first `n` test arrangements at 16 s and reads their tempo from the first 4, 8 and
16 s. `text` encodes the corpus captions with the recipes' text encoder (MiniLM, with and without the numeral
features of `text_encoder.numbers`) and prints how far a caption's pooled state (and its BPM's tokens) moves when one
attribute changes, and how well a linear probe reads each attribute back from held-out captions. `denoiser` reads the
first `n` test clips back after a trained model's representation round trip and as its one-step estimates x̂0 from
the clip noised to flow time t (`audiodiff.evaluation.one_step`): what the denoiser loses there it cannot draw.
`style` generates the held-out prompts, tabulates the style asked against the style heard, and splits each frequent
misreading's margin over the style classifier's feature groups (drum-kit level and spread, bass timbre, rhythm),
beside the same split for real clips. `roles` generates the held-out prompts and splits each instrument read back
into the one asked for that role, the one the prompt gave the other role, and neither (with the instruments most
often heard instead): a model that draws the named instruments in swapped roles binds words to roles badly, one
that draws neither has not learnt the timbres. Every command prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from audiodiff.benchmarks.music.corpus import (
    CAPTION_TEMPLATES_TRAIN,
    DEFAULT_NUM_CLIPS,
    INSTRUMENTS,
    METERS,
    STYLE_NAMES,
    TEMPO_RANGES,
    ClipPlan,
    _fill,
    plan_clips,
)

# A template without a tempo word, so that changing the BPM changes nothing else in the caption.
PROBE_TEMPLATE = CAPTION_TEMPLATES_TRAIN[15]  # "{style_noun} ({key}, {bpm} BPM) with {lead} lead and {chords}"
PARAPHRASE_TEMPLATE = CAPTION_TEMPLATES_TRAIN[4]  # same attributes, other words
WINDOW_SECONDS = 8.0  # the music recipes' segment_seconds


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats in [0, 1] columns are the caller's to format."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


# ------------------------------------------------------------------------------------------------------ corpus
def corpus_command(args: argparse.Namespace) -> None:
    """BPM spread per style, beats per window, clip lengths, instrument counts (from the plans, no audio)."""
    plans = plan_clips(args.seed, DEFAULT_NUM_CLIPS)
    train = [p for p in plans if p.split == "train"]
    rows = []
    for style in STYLE_NAMES:
        bpm = np.array([p.attributes["tempo"] for p in train if p.attributes["style"] == style], dtype=float)
        lo, hi = TEMPO_RANGES[style]
        mid = (lo + hi) / 2
        near_middle = np.mean(np.abs(bpm / mid - 1) <= 0.04)
        rows.append([style, METERS[style], f"{lo}–{hi}", f"{bpm.std():.1f}", pct(near_middle),
                     f"{WINDOW_SECONDS * lo / 60:.1f}–{WINDOW_SECONDS * hi / 60:.1f}",
                     len({round(b) for b in bpm})])
    print(f"Tempo per style ({len(train)} train clips; chance = share within 4% of the range's middle)\n")
    print(table(["style", "meter", "BPM range", "BPM std", "within 4% of the middle", "beats in 8 s",
                 "distinct BPMs"], rows))
    seconds = np.array([p.duration for p in train])
    print(f"\nClip length: {seconds.min():.1f}–{seconds.max():.1f} s, {pct(np.mean(seconds < WINDOW_SECONDS))} "
          f"shorter than the {WINDOW_SECONDS:g} s window; real audio per window "
          f"{np.minimum(seconds, WINDOW_SECONDS).mean():.2f} s on average\n")
    from audiodiff.benchmarks.music.attributes import asked_music

    captions = [(c, p.attributes) for p in train for c in p.captions]
    with_bpm = sum("tempo" in asked_music(c, a) for c, a in captions)
    print(f"{with_bpm} of {len(captions)} train captions ({pct(with_bpm / len(captions))}) write the BPM; the others "
          f"name a tempo class (slow < 90 ≤ moderate ≤ 125 < fast)\n")
    lead = Counter(p.attributes["lead"] for p in train)
    chords = Counter(p.attributes["chords"] for p in train)
    pairs = Counter((p.attributes["lead"], p.attributes["chords"]) for p in train)
    print(table(["instrument", "GM program", "as lead", "as chords"],
                [[name, program, lead[name], chords[name]] for name, program in INSTRUMENTS.items()]))
    print(f"\n{len(pairs)} of {len(INSTRUMENTS) * (len(INSTRUMENTS) - 1)} ordered (lead, chords) pairs occur, "
          f"{min(pairs.values())}–{max(pairs.values())} train clips each")


# -------------------------------------------------------------------------------------------------- extractors
def _test_clips(root: Path, n: int) -> tuple[list[np.ndarray], list[dict]]:
    import soundfile as sf

    rows = _test_rows(root, n)
    clips = [sf.read(r.audio, dtype="float32")[0] for r in rows]
    return clips, [dict(r.attributes) for r in rows]


def _stft_griffinlim(clips: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from audiodiff.evaluation.reconstruction import stft_griffinlim_system

    rebuild = stft_griffinlim_system()
    with torch.no_grad():
        return [rebuild(torch.from_numpy(c)[None, None])[0].numpy() for c in clips]


def extractor_scores(clips: list[np.ndarray], truth: list[dict]) -> dict[str, float]:
    """Accuracy per scored attribute, plus ``tempo (true style)``: the tempo read within the true style's range."""
    from audiodiff.benchmarks.music.attributes import extract_music, score_music, tempo_within

    predicted = [extract_music(c, 16000, reference={"style": t["style"]}) for c, t in zip(clips, truth, strict=True)]
    scores = {k: v["accuracy"] for k, v in score_music(predicted, truth).items()}
    scores["tempo (true style)"] = float(np.mean([tempo_within(p["tempo_in_asked_style"], t["tempo"])
                                                  for p, t in zip(predicted, truth, strict=True)]))
    return scores


def extractors_command(args: argparse.Namespace) -> None:
    from audiodiff.benchmarks.roundtrip import griffinlim_roundtrip
    from audiodiff.representations.mel import MelRepresentation

    clips, truth = _test_clips(Path(args.root), args.n)
    conditions: list[tuple[str, Callable[[], list[np.ndarray]]]] = [("clean", lambda: clips)]
    for n_mels in args.mels:
        label = f"{n_mels}-band mel → Griffin-Lim" + (" (music_quick, music)" if n_mels == 64 else "")
        conditions.append((label, lambda n_mels=n_mels: griffinlim_roundtrip(
            clips, representation=MelRepresentation(n_mels=n_mels))))
        if args.speckle_db > 0:
            conditions.append((f"{label} + {args.speckle_db:g} dB speckle", lambda n_mels=n_mels: griffinlim_roundtrip(
                clips, representation=MelRepresentation(n_mels=n_mels), mel_noise_db=args.speckle_db)))
    if args.stft:
        conditions.append(("STFT magnitude → Griffin-Lim (bound)", lambda: _stft_griffinlim(clips)))
    names = ["style", "tempo", "tempo (true style)", "key", "mode", "lead", "chords", "instruments"]
    rows = []
    for label, make in conditions:
        start = time.perf_counter()
        audio = make()
        scores = extractor_scores(audio, truth)
        rows.append([label, *(pct(scores[k]) for k in names), f"{time.perf_counter() - start:.0f}"])
        print(f"  {label}: done", flush=True)
    print(f"\nExtractor accuracy on the first {len(clips)} test clips of data/music\n")
    print(table(["audio", *names, "seconds"], rows))


# ---------------------------------------------------------------------------------------------------- denoiser
def denoiser_command(args: argparse.Namespace) -> None:
    """What a trained model's denoiser keeps of real test clips: each clip through the model's representation, and
    its one-step estimate x̂0 from the clip noised to flow time t (conditioned on the clip's first caption)."""
    import soundfile as sf

    from audiodiff.evaluation.one_step import one_step_estimates, round_trip
    from audiodiff.pipeline import AudioDiffusionPipeline

    test_rows = _test_rows(Path(args.root), args.n)
    clips = [sf.read(r.audio, dtype="float32")[0] for r in test_rows]
    truth = [dict(r.attributes) for r in test_rows]
    captions = [r.captions[0] for r in test_rows]
    names = ["style", "tempo", "key", "mode", "lead", "chords", "instruments"]
    rows = []
    for model in args.models:
        pipe = AudioDiffusionPipeline.from_pretrained(model, device="cpu", watermark=False)
        conditions: list[tuple[str, Callable[[], list[np.ndarray]]]] = [(
            "representation round trip", lambda pipe=pipe: [round_trip(pipe, c) for c in clips])]
        conditions += [(f"x̂0 from t = {t:g}", lambda t=t, pipe=pipe: one_step_estimates(pipe, clips, captions, t))
                       for t in args.t]
        for label, make in conditions:
            scores = extractor_scores(make(), truth)
            rows.append([model, label, *(pct(scores[k]) for k in names)])
            print(f"  {model} {label}: done", flush=True)
    print(f"\nExtractor accuracy on the first {len(clips)} test clips of data/music, as each model returns them\n")
    print(table(["model", "audio", *names], rows))


def _test_rows(root: Path, n: int) -> list:
    from audiodiff.benchmarks import ensure_corpus
    from audiodiff.data.manifest import read_manifest

    return read_manifest(ensure_corpus("music", root), split="test")[:n]


def style_command(args: argparse.Namespace) -> None:
    """Which style a model's clips are heard as, and which of the style classifier's feature groups decide a
    misreading: per group, the logit of the style heard minus that of the style asked (its share of the margin),
    averaged over the misread clips, beside the same difference for real test clips of the asked style."""
    import soundfile as sf
    import torch

    from audiodiff.benchmarks.music.attributes import (
        STYLE_FEATURE_NAMES,
        analyse_music,
        load_style_model,
        style_features,
    )
    from audiodiff.evaluation.adherence import held_out_prompts
    from audiodiff.pipeline import AudioDiffusionPipeline

    classifier = load_style_model()
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(STYLE_FEATURE_NAMES):
        parts = name.split("_")
        groups.setdefault("_".join(parts[:4] if name.startswith("onset") else parts[:2]), []).append(i)

    def margins(wav: np.ndarray, heard: str, asked: str) -> np.ndarray:
        x = (style_features(analyse_music(wav)) - classifier.mean) / classifier.scale
        w = classifier.weights[classifier.classes.index(heard)] - classifier.weights[classifier.classes.index(asked)]
        return np.array([float(w[idx] @ x[idx]) for idx in groups.values()])

    rows_all = _test_rows(Path(args.root), 10**9)
    prompts, truths = held_out_prompts(rows_all, args.n, 0, corpus="music")
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu", watermark=False)
    heard: list[str] = []
    audio: list[np.ndarray] = []
    for lo in range(0, len(prompts), 32):
        with torch.inference_mode():
            out = pipe(prompts[lo: lo + 32], guidance=args.guidance, seed=lo)
        for clip in out.audio:
            audio.append(clip[0].numpy())
            heard.append(classifier.predict(style_features(analyse_music(audio[-1])))[0])
    asked = [t["style"] for t in truths]
    styles = list(classifier.classes)
    confusion = Counter(zip(asked, heard, strict=True))
    print(f"\nStyle asked (rows) and heard (columns), {len(prompts)} held-out prompts, guidance {args.guidance:g}\n")
    print(table(["asked \\ heard", *styles], [[a, *(confusion[a, h] for h in styles)] for a in styles]))
    real = {s: [sf.read(r.audio, dtype="float32")[0] for r in rows_all if r.attributes["style"] == s][:args.real]
            for s in styles}
    rows = []
    for (a, h), count in sorted(confusion.items(), key=lambda kv: -kv[1]):
        if a == h or count < args.min_count:
            continue
        gen = np.mean([margins(w, h, a) for w, x, y in zip(audio, asked, heard, strict=True) if (x, y) == (a, h)], 0)
        ref = np.mean([margins(w, h, a) for w in real[a]], 0)
        rows.append([f"{a} heard as {h} ({count})", *(f"{g:+.1f} / {r:+.1f}" for g, r in zip(gen, ref, strict=True)),
                     f"{gen.sum():+.1f} / {ref.sum():+.1f}"])
    print(f"\nLogit of the style heard minus the style asked, per feature group: generated (misread clips) / real "
          f"test clips of the asked style (first {args.real}); the bias terms are left out\n")
    print(table(["clips", *groups, "sum"], rows))


def roles_command(args: argparse.Namespace) -> None:
    """Lead and chord instruments read back from a model's clips: asked for that role, asked for the other, or
    neither (module docstring)."""
    from audiodiff.evaluation.adherence import evaluate_adherence, held_out_prompts
    from audiodiff.pipeline import AudioDiffusionPipeline

    prompts, truths = held_out_prompts(_test_rows(Path(args.root), 10**9), args.n, 0, corpus="music")
    pipe = AudioDiffusionPipeline.from_pretrained(args.model, device="cpu", watermark=False)
    heard = evaluate_adherence(pipe, prompts, truths, "music", args.guidance).predictions
    # every training template names the lead first; one held-out template names the chords first
    chords_first = [p.find(t["chords"]) < p.find(t["lead"]) for p, t in zip(prompts, truths, strict=True)]
    rows, instead = [], {}
    for role, other in (("lead", "chords"), ("chords", "lead")):
        for label, keep in (("", None), (", chords named first", True), (", lead named first", False)):
            got = [(p[role], t[role], t[other]) for p, t, first in zip(heard, truths, chords_first, strict=True)
                   if keep is None or first == keep]
            right = sum(h == a for h, a, _ in got)
            swapped = sum(h == o != a for h, a, o in got)
            rows.append([f"{role}{label} ({len(got)})", pct(right / max(len(got), 1)),
                         pct(swapped / max(len(got), 1)), pct(1 - (right + swapped) / max(len(got), 1))])
        instead[role] = Counter(p[role] for p, t in zip(heard, truths, strict=True)
                                if p[role] not in (t[role], t[other])).most_common(4)
    both = sum({p["lead"], p["chords"]} == {t["lead"], t["chords"]} for p, t in zip(heard, truths, strict=True))
    print(f"\nInstruments read back, {len(prompts)} held-out prompts, guidance {args.guidance:g} "
          f"(chance 10% for each column but the last)\n")
    print(table(["role (prompts)", "the one asked", "the other role's", "neither"], rows))
    print(f"\nboth asked instruments heard, in either role: {pct(both / len(prompts))}")
    for role, common in instead.items():
        print(f"- {role}, neither: mostly heard as " + ", ".join(f"{name} ({n})" for name, n in common))


# ------------------------------------------------------------------------------------------------------- tempo
def render_long(plans: Sequence[ClipPlan], seconds: float) -> list[np.ndarray]:
    """The clips of `plans` arranged and rendered at `seconds` instead of their own length, 16 kHz, finished
    (loudness, fade) as the corpus finishes its clips."""
    from audiodiff.benchmarks.music.corpus import SAMPLE_RATE, arrangement_for, finish_audio
    from audiodiff.benchmarks.music.midi import to_midi
    from audiodiff.benchmarks.music.soundfont import find_fluidsynth, find_soundfont, render_midi

    soundfont, fluidsynth = find_soundfont(), find_fluidsynth()
    out = []
    for plan in plans:
        longer = dataclasses.replace(plan, duration=seconds)
        wav = render_midi(to_midi(arrangement_for(longer)), soundfont=soundfont, sample_rate=SAMPLE_RATE,
                          fluidsynth=fluidsynth)
        out.append(finish_audio(wav, seconds, SAMPLE_RATE))
    return out


def tempo_command(args: argparse.Namespace) -> None:
    from audiodiff.benchmarks.music.attributes import analyse_music, estimate_tempo, extract_music, tempo_within

    plans = [p for p in plan_clips(args.seed, DEFAULT_NUM_CLIPS) if p.split == "test"][: args.n]
    start = time.perf_counter()
    longest = max(args.seconds)
    clips = render_long(plans, longest)
    print(f"  rendered {len(clips)} clips of {longest:g} s in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for seconds in sorted(args.seconds):
        crops = [c[: round(seconds * 16000)] for c in clips]
        hits: dict[str, list[bool]] = {"predicted": [], "true": [], "free": [], "octave": []}
        for crop, plan in zip(crops, plans, strict=True):
            bpm, style = plan.attributes["tempo"], plan.attributes["style"]
            envelope = analyse_music(crop).onset_envelope
            hits["predicted"].append(tempo_within(extract_music(crop, 16000)["tempo"], bpm))
            hits["true"].append(tempo_within(estimate_tempo(envelope, TEMPO_RANGES[style]), bpm))
            free = estimate_tempo(envelope)
            hits["free"].append(tempo_within(free, bpm))
            hits["octave"].append(any(tempo_within(free * f, bpm) for f in (0.5, 1.0, 2.0, 2 / 3, 1.5)))
        beats = np.array([seconds * p.attributes["tempo"] / 60 for p in plans])
        rows.append([f"{seconds:g} s", f"{beats.min():.0f}–{beats.max():.0f}", pct(np.mean(hits["predicted"])),
                     pct(np.mean(hits["true"])), pct(np.mean(hits["free"])), pct(np.mean(hits["octave"]))])
    print(f"\nTempo read from the first seconds of {len(plans)} test arrangements rendered at {longest:g} s "
          f"(within 4% of the score's BPM)\n")
    print(table(["window", "beats", "predicted style's range (the extractor)", "true style's range",
                 "50–200 BPM, no range", "50–200 BPM up to ×2, ×3/2"], rows))


# -------------------------------------------------------------------------------------------------------- text
def _variants(a: dict, rng: np.random.Generator) -> dict[str, str]:
    """The probe caption of attributes `a` and copies with one thing changed."""
    def caption(template: str = PROBE_TEMPLATE, **change: object) -> str:
        return _fill(template, {**a, **change}, rng)

    others = [n for n in INSTRUMENTS if n not in (a["lead"], a["chords"])]
    styles = [s for s in STYLE_NAMES if s != a["style"]]
    from audiodiff.benchmarks.music.midi import PITCH_CLASSES
    keys = [k for k in PITCH_CLASSES if k != a["key"]]
    bpm = int(a["tempo"])
    return {
        "base": caption(),
        "BPM +2 (about 2%)": caption(tempo=bpm + 2),
        "BPM ×1.25": caption(tempo=round(bpm * 1.25)),
        "BPM ×0.75": caption(tempo=round(bpm * 0.75)),
        "key (tonic)": caption(key=str(rng.choice(keys))),
        "mode": caption(mode="minor" if a["mode"] == "major" else "major"),
        "style": caption(style=str(rng.choice(styles))),
        "lead instrument": caption(lead=str(rng.choice(others))),
        "chord instrument": caption(chords=str(rng.choice(others))),
        "lead ↔ chords swapped": caption(lead=a["chords"], chords=a["lead"]),
        "paraphrase (other template, same attributes)": caption(PARAPHRASE_TEMPLATE),
    }


@dataclasses.dataclass(frozen=True)
class CaptionStates:
    """What the denoiser reads of captions, from one MiniLM pass, without (``plain``) and with (``numbers``) the
    numeral features: ``pooled_*`` [B, E] mean token state (the U-Net's pooled input) and ``number_*`` [B, E] mean
    state of the tokens of the caption's numbers (the BPM, as cross-attention sees it; zeros without a number)."""

    pooled_plain: np.ndarray
    pooled_numbers: np.ndarray
    number_plain: np.ndarray
    number_numbers: np.ndarray


def encode_captions(encoder: object, captions: list[str], batch_size: int = 128) -> CaptionStates:
    """Encode `captions` once with `encoder` (a `TextEncoder` built with ``numbers=True``), by length."""
    import torch

    from audiodiff.conditioning.text import add_numeral_features, masked_mean, token_numbers

    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for lo in range(0, len(order), batch_size):
        texts = [captions[i] for i in order[lo : lo + batch_size]]
        batch = encoder.tokenizer(texts, padding="longest", truncation=True, max_length=encoder.max_length,
                                  return_tensors="pt", return_offsets_mapping=True)
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            plain = encoder.model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).last_hidden_state
        values = token_numbers(texts, batch["offset_mapping"])
        numbers = add_numeral_features(plain, values, encoder.number_basis)
        found = (torch.isfinite(values) & mask)[..., None].float()
        for k, states in enumerate((plain, numbers)):
            parts[k].append(masked_mean(states, mask).numpy())
            parts[2 + k].append(((states * found).sum(1) / found.sum(1).clamp_min(1.0)).numpy())
    inverse = np.argsort(order)
    return CaptionStates(*(np.concatenate(p)[inverse] for p in parts))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of 1 − cos over the rows of a [B, E] and b [B, E]."""
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(np.mean(1 - cos))


def text_command(args: argparse.Namespace) -> None:
    import torch
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from audiodiff.benchmarks.music.attributes import asked_music, tempo_within
    from audiodiff.conditioning.text import TextEncoder

    torch.set_num_threads(1)
    start = time.perf_counter()
    plans = plan_clips(args.seed, DEFAULT_NUM_CLIPS)
    train = [(c, p.attributes) for p in plans if p.split == "train" for c in p.captions]
    test = [(c, p.attributes) for p in plans if p.split == "test" for c in p.captions]
    bases = [p.attributes for p in plans if p.split == "test"][: args.n]
    rng = np.random.default_rng(args.seed)
    variants = [_variants(a, rng) for a in bases]
    encoder = TextEncoder("minilm", numbers=True)
    changed = {name: encode_captions(encoder, [v[name] for v in variants]) for name in variants[0]}
    s_train = encode_captions(encoder, [c for c, _ in train])
    s_test = encode_captions(encoder, [c for c, _ in test])
    print(f"  encoded {len(train) + len(test) + len(changed) * len(bases)} captions in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    kinds = ("plain", "numbers")

    def distances(field: str, names: list[str]) -> list[list[str]]:
        base = changed["base"]
        return [[name, *(f"{cosine_distance(getattr(base, field + k), getattr(changed[name], field + k)):.4f}"
                         for k in kinds)] for name in names]

    distance_rows = distances("pooled_", [n for n in changed if n != "base"])
    number_rows = distances("number_", [n for n in changed if n.startswith("BPM")])
    probe_rows: dict[str, list[str]] = {}
    with_bpm = np.array(["tempo" in asked_music(c, a) for c, a in train])
    held = np.array(["tempo" in asked_music(c, a) for c, a in test])
    for k in kinds:
        x_train, x_test = getattr(s_train, "pooled_" + k), getattr(s_test, "pooled_" + k)
        for attribute in ("style", "key", "mode", "lead", "chords"):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=args.c, max_iter=2000))
            probe.fit(x_train, [a[attribute] for _, a in train])
            guess = probe.predict(x_test)
            cell = pct(float(np.mean([g == a[attribute] for g, (_, a) in zip(guess, test, strict=True)])))
            if attribute in ("lead", "chords"):  # wrong answers that name the caption's other instrument
                other = "chords" if attribute == "lead" else "lead"
                wrong = [(g, a) for g, (_, a) in zip(guess, test, strict=True) if g != a[attribute]]
                cell += f" ({pct(sum(g == a[other] for g, a in wrong) / max(len(wrong), 1))} of errors: the {other})"
            probe_rows.setdefault(attribute, [attribute]).append(cell)
        # Tempo: ridge on log BPM over the captions that write the BPM, pooled and at the number's own tokens.
        bpm_train = np.log([a["tempo"] for (_, a), w in zip(train, with_bpm, strict=True) if w])
        bpm_test = [a["tempo"] for (_, a), w in zip(test, held, strict=True) if w]
        for where, field in (("tempo, pooled state", "pooled_"), ("tempo, the number's tokens", "number_")):
            probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
            probe.fit(getattr(s_train, field + k)[with_bpm], bpm_train)
            guess = np.exp(probe.predict(getattr(s_test, field + k)[held]))
            accuracy = np.mean([tempo_within(float(g), t) for g, t in zip(guess, bpm_test, strict=True)])
            probe_rows.setdefault(where, [where]).append(pct(float(accuracy)))
    print(f"  probes done at {time.perf_counter() - start:.0f} s", flush=True)
    header = ["caption change", "MiniLM alone", "with numeral features (`text_encoder.numbers=true`)"]
    print(f"\nPooled caption state: mean cosine distance (1 − cos) from the probe caption "
          f"\"{PROBE_TEMPLATE}\" of {len(bases)} test clips\n")
    print(table(header, distance_rows))
    print("\nThe same at the number's own tokens (the BPM's token states, as cross-attention sees them)\n")
    print(table(header, number_rows))
    print(f"\nLinear probes fitted on {len(train)} train captions, scored on {len(test)} test captions (held-out "
          f"templates); tempo: within 4%, fitted on the {int(with_bpm.sum())} train and scored on the "
          f"{int(held.sum())} test captions that write the BPM\n")
    chance = {"style": 1 / 7, "key": 1 / 12, "mode": 1 / 2, "lead": 1 / 10, "chords": 1 / 10}
    print(table(["attribute", "MiniLM alone", "with numeral features", "chance"],
                [[*row, pct(chance[k]) if k in chance else "–"] for k, row in probe_rows.items()]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (the prepare default)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("corpus", help="tempo and instrument statistics of the corpus plan")
    extractors = commands.add_parser("extractors", help="extractor accuracy on clean and round-tripped clips")
    extractors.add_argument("--root", default="data")
    extractors.add_argument("--n", type=int, default=100, help="test clips")
    extractors.add_argument("--mels", type=int, nargs="+", default=[64, 128], help="mel bands at 16 kHz")
    extractors.add_argument("--speckle-db", type=float, default=0.0, help="also with this much mel speckle")
    extractors.add_argument("--stft", action="store_true", help="also Griffin-Lim from the STFT magnitude")
    tempo = commands.add_parser("tempo", help="tempo reading against the window length")
    tempo.add_argument("--n", type=int, default=100, help="test arrangements")
    tempo.add_argument("--seconds", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    denoiser = commands.add_parser("denoiser", help="what a model's denoiser keeps of real clips")
    denoiser.add_argument("models", nargs="+", help="export folders")
    denoiser.add_argument("--root", default="data")
    denoiser.add_argument("--n", type=int, default=70, help="test clips")
    denoiser.add_argument("--t", type=float, nargs="+", default=[0.05, 0.3, 0.6], help="flow times of x̂0")
    style = commands.add_parser("style", help="which style a model's clips are heard as, and why")
    style.add_argument("model", help="an export folder")
    style.add_argument("--root", default="data")
    style.add_argument("--n", type=int, default=200, help="held-out prompts")
    style.add_argument("--guidance", type=float, default=3.0)
    style.add_argument("--real", type=int, default=20, help="real test clips per style for the comparison")
    style.add_argument("--min-count", type=int, default=3, help="confusions rarer than this are left out")
    roles = commands.add_parser("roles", help="instruments: the timbre wrong, or the roles swapped")
    roles.add_argument("model", help="an export folder")
    roles.add_argument("--root", default="data")
    roles.add_argument("--n", type=int, default=200, help="held-out prompts")
    roles.add_argument("--guidance", type=float, default=3.0)
    text = commands.add_parser("text", help="what the text encoder keeps of each attribute")
    text.add_argument("--n", type=int, default=100, help="test clips whose captions are varied")
    text.add_argument("--c", type=float, default=1.0, help="inverse regularisation of the logistic probes")
    args = parser.parse_args(argv)
    {"corpus": corpus_command, "extractors": extractors_command, "denoiser": denoiser_command,
     "style": style_command, "tempo": tempo_command, "text": text_command, "roles": roles_command}[args.command](args)


if __name__ == "__main__":
    main()
