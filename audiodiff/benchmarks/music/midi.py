"""General MIDI arrangements for the built-in music corpus: drums, bass, chords and a melody in one style.

An arrangement is a list of :class:`Note` events in beats (quarter notes) plus per-channel programs; it is
written to a Standard MIDI File with :func:`to_midi`. Everything random is drawn from the numpy Generator
passed in, so an arrangement is a pure function of its attributes and that Generator's state.

The music is written so that its attributes can be heard back:

- key: every clip starts and ends on the tonic chord, the bass plays chord roots on the strong beats, the
  melody starts on a tonic-chord tone and ends on the tonic, and the cadence before the last chord is V
  (in minor the major V with its raised leading tone, which tells a minor key from its relative major);
- tempo: the drums keep a steady style-specific pattern at exactly ``tempo`` quarter notes per minute;
- style: each style has its own meter, drum kit, drum pattern, bass line, comping rhythm and swing.

Channels: 0 melody (lead), 1 chords, 2 bass, 9 drums (GM percussion channel 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import mido
import numpy as np

LEAD_CHANNEL, CHORD_CHANNEL, BASS_CHANNEL, DRUM_CHANNEL = 0, 1, 2, 9
TICKS_PER_BEAT = 480  # divisible by 3 (swing, triplets) and 4 (sixteenths)
RELEASE_BEATS = 0.25  # notes still sounding when a clip ends stop this long after (the clip is cut there)

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# General MIDI Level 1 program names, for the programs the corpus uses (0-based program numbers).
GM_PROGRAM_NAMES: dict[int, str] = {
    0: "Acoustic Grand Piano",
    11: "Vibraphone",
    16: "Drawbar Organ",
    24: "Acoustic Guitar (nylon)",
    29: "Overdriven Guitar",
    32: "Acoustic Bass",
    33: "Electric Bass (finger)",
    34: "Electric Bass (pick)",
    35: "Fretless Bass",
    38: "Synth Bass 1",
    48: "String Ensemble 1",
    58: "Tuba",
    61: "Brass Section",
    65: "Alto Sax",
    73: "Flute",
    81: "Lead 2 (sawtooth)",
}

# GM percussion keys (channel 10).
KICK, SIDE_STICK, SNARE, CLAP = 36, 37, 38, 39
CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, SHAKER = 42, 44, 46, 49, 51, 70

# Scale degrees as semitones above the tonic. Minor uses the natural minor, with the raised 7th over V.
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)


@dataclass(frozen=True)
class Chord:
    """A diatonic chord: its root (semitones above the tonic) and its tones (semitones above the root)."""

    symbol: str
    root: int
    tones: tuple[int, ...]


MAJOR_CHORDS: dict[str, Chord] = {
    "I": Chord("I", 0, (0, 4, 7)),
    "ii": Chord("ii", 2, (0, 3, 7)),
    "IV": Chord("IV", 5, (0, 4, 7)),
    "V": Chord("V", 7, (0, 4, 7)),
    "V7": Chord("V7", 7, (0, 4, 7, 10)),
    "vi": Chord("vi", 9, (0, 3, 7)),
}
MINOR_CHORDS: dict[str, Chord] = {
    "i": Chord("i", 0, (0, 3, 7)),
    "iv": Chord("iv", 5, (0, 3, 7)),
    "V": Chord("V", 7, (0, 4, 7)),
    "V7": Chord("V7", 7, (0, 4, 7, 10)),
    "VI": Chord("VI", 8, (0, 4, 7)),
}
# Which chord may follow which (first-order chain); the last two chords are always V(7) and the tonic.
MAJOR_NEXT: dict[str, tuple[str, ...]] = {
    "I": ("IV", "IV", "V", "ii", "vi"),
    "ii": ("V", "IV"),
    "IV": ("I", "V", "ii", "I"),
    "V": ("I", "I", "IV", "vi"),
    "vi": ("IV", "ii"),
}
MINOR_NEXT: dict[str, tuple[str, ...]] = {
    "i": ("iv", "iv", "V", "VI"),
    "iv": ("i", "V", "i"),
    "V": ("i", "i", "VI"),
    "VI": ("iv", "V"),
}

# A pattern hit: (position in beats from the bar start, duration in beats, velocity).
Hit = tuple[float, float, int]


@dataclass(frozen=True)
class StyleSpec:
    """How one style is played.

    Positions are in beats from the start of a bar and written straight; ``swing`` moves every off-beat
    eighth to two thirds of the beat. Bass steps name a chord tone: ``root``, ``fifth``, ``third``,
    ``octave`` or ``walk`` (a diatonic step leading to the next chord's root).
    """

    name: str
    beats_per_bar: int
    tempo_range: tuple[int, int]  # inclusive, quarter notes per minute
    swing: bool
    drum_kit: int  # GM bank-128 program (standard, room, power, TR-808, jazz, brush, orchestra)
    bass_program: int
    beats_per_chord: int  # harmonic rhythm
    drums: dict[int, tuple[tuple[Hit, ...], ...]]  # GM key -> one tuple of hits per bar, cycled
    bass: tuple[tuple[tuple[float, float, str], ...], ...]  # per bar, cycled: (position, duration, step)
    comp: tuple[tuple[tuple[float, float], ...], ...]  # per bar, cycled: (position, duration) of a chord hit
    comp_arpeggio: bool  # comping hits play one chord tone each, cycling upwards, instead of the whole chord
    melody_rhythms: tuple[tuple[tuple[float, float], ...], ...]  # one-bar rhythms to choose from
    seventh_dominant: bool  # use V7 instead of V


def _every(step: float, beats: int, velocity: int, duration: float = 0.25) -> tuple[Hit, ...]:
    return tuple((i * step, duration, velocity) for i in range(int(round(beats / step))))


STYLES: dict[str, StyleSpec] = {
    "rock": StyleSpec(
        name="rock", beats_per_bar=4, tempo_range=(100, 140), swing=False, drum_kit=16, bass_program=34,
        beats_per_chord=4,
        drums={
            KICK: (((0, 0.5, 110), (2, 0.5, 105), (2.5, 0.5, 95)),),
            SNARE: (((1, 0.5, 110), (3, 0.5, 110)),),
            CLOSED_HAT: (_every(0.5, 4, 80),),
        },
        bass=(tuple((i * 0.5, 0.45, "root") for i in range(8)),),
        comp=(((0, 1.5), (1.5, 1.0), (2.5, 1.5)),),
        comp_arpeggio=False,
        melody_rhythms=(
            ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1.5), (3.5, 0.5)),
            ((0, 0.5), (0.5, 0.5), (1, 1), (2, 1), (3, 1)),
            ((0, 1.5), (1.5, 0.5), (2, 2)),
            ((0, 1), (1, 1), (2, 0.5), (2.5, 0.5), (3, 1)),
        ),
        seventh_dominant=False,
    ),
    "waltz": StyleSpec(
        name="waltz", beats_per_bar=3, tempo_range=(88, 132), swing=False, drum_kit=8, bass_program=32,
        beats_per_chord=3,
        drums={
            KICK: (((0, 0.5, 95),),),
            SNARE: (((1, 0.5, 55), (2, 0.5, 55)),),
            CLOSED_HAT: (((0, 0.5, 60), (1, 0.5, 70), (2, 0.5, 70)),),
        },
        bass=(((0, 0.9, "root"),), ((0, 0.9, "fifth"),)),
        comp=(((1, 0.8), (2, 0.8)),),
        comp_arpeggio=False,
        melody_rhythms=(
            ((0, 2), (2, 1)),
            ((0, 3),),
            ((0, 1), (1, 1), (2, 1)),
            ((0, 1.5), (1.5, 0.5), (2, 1)),
        ),
        seventh_dominant=False,
    ),
    "bossa nova": StyleSpec(
        name="bossa nova", beats_per_bar=4, tempo_range=(120, 150), swing=False, drum_kit=0, bass_program=35,
        beats_per_chord=4,
        drums={
            KICK: (((0, 0.5, 85), (1.5, 0.5, 75), (2, 0.5, 85), (3.5, 0.5, 75)),),
            SIDE_STICK: (((0, 0.5, 90), (1.5, 0.5, 90), (3, 0.5, 90)), ((1, 0.5, 90), (2.5, 0.5, 90))),
            SHAKER: (_every(0.5, 4, 60),),
        },
        bass=(((0, 1.4, "root"), (1.5, 0.5, "root"), (2, 1.4, "fifth"), (3.5, 0.5, "fifth")),),
        comp=(((0, 1.0), (1.5, 1.0), (3, 0.5)), ((0.5, 1.0), (2, 1.0), (3.5, 0.5))),
        comp_arpeggio=False,
        melody_rhythms=(
            ((0, 1.5), (1.5, 1), (2.5, 1.5)),
            ((0, 0.5), (0.5, 1), (1.5, 0.5), (2, 1), (3, 1)),
            ((0.5, 1), (1.5, 1.5), (3, 1)),
            ((0, 1), (1, 0.5), (1.5, 1.5), (3, 1)),
        ),
        seventh_dominant=True,
    ),
    "march": StyleSpec(
        name="march", beats_per_bar=2, tempo_range=(104, 128), swing=False, drum_kit=48, bass_program=58,
        beats_per_chord=4,
        drums={
            KICK: (((0, 0.5, 105), (1, 0.5, 95)),),
            SNARE: (((0, 0.25, 110), (0.5, 0.25, 80), (0.75, 0.25, 80), (1, 0.25, 100), (1.5, 0.25, 80),
                     (1.75, 0.25, 80)),),
            CRASH: (((0, 1.0, 80),), ()),
        },
        bass=(((0, 0.45, "root"), (1, 0.45, "fifth")),),
        comp=(((0.5, 0.4), (1.5, 0.4)),),
        comp_arpeggio=False,
        melody_rhythms=(
            ((0, 0.75), (0.75, 0.25), (1, 1)),
            ((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 0.5)),
            ((0, 1), (1, 1)),
            ((0, 1.5), (1.5, 0.5)),
        ),
        seventh_dominant=False,
    ),
    "ballad": StyleSpec(
        name="ballad", beats_per_bar=4, tempo_range=(60, 80), swing=False, drum_kit=40, bass_program=33,
        beats_per_chord=2,
        drums={
            KICK: (((0, 0.5, 80), (2.5, 0.5, 65)),),
            SIDE_STICK: (((1, 0.5, 70), (3, 0.5, 70)),),
            CLOSED_HAT: (_every(0.5, 4, 50),),
        },
        bass=(((0, 1.9, "root"), (2, 1.9, "root")),),
        comp=(tuple((i * 0.5, 0.5) for i in range(8)),),
        comp_arpeggio=True,
        melody_rhythms=(
            ((0, 2), (2, 1.5), (3.5, 0.5)),
            ((0, 1.5), (1.5, 0.5), (2, 2)),
            ((0, 1), (1, 1), (2, 2)),
            ((0, 3), (3, 1)),
        ),
        seventh_dominant=False,
    ),
    "techno": StyleSpec(
        name="techno", beats_per_bar=4, tempo_range=(124, 148), swing=False, drum_kit=25, bass_program=38,
        beats_per_chord=8,
        drums={
            KICK: (((0, 0.5, 115), (1, 0.5, 115), (2, 0.5, 115), (3, 0.5, 115)),),
            CLAP: (((1, 0.5, 95), (3, 0.5, 95)),),
            OPEN_HAT: (((0.5, 0.25, 85), (1.5, 0.25, 85), (2.5, 0.25, 85), (3.5, 0.25, 85)),),
            CLOSED_HAT: (_every(0.25, 4, 50),),
        },
        bass=(((0.5, 0.4, "root"), (1.5, 0.4, "root"), (2.5, 0.4, "octave"), (3.5, 0.4, "root")),),
        comp=(((0, 0.25), (0.75, 0.25), (1.5, 0.25), (2.5, 0.25), (3.25, 0.25)),),
        comp_arpeggio=False,
        melody_rhythms=(
            tuple((i * 0.5, 0.4) for i in range(8)),
            ((0, 0.75), (0.75, 0.75), (1.5, 0.5), (2, 0.75), (2.75, 0.75), (3.5, 0.5)),
            tuple((i * 0.25, 0.2) for i in range(16) if i % 4 != 3),
        ),
        seventh_dominant=False,
    ),
    "swing": StyleSpec(
        name="swing", beats_per_bar=4, tempo_range=(120, 176), swing=True, drum_kit=32, bass_program=32,
        beats_per_chord=4,
        drums={
            RIDE: (((0, 0.5, 90), (1, 0.5, 95), (1.5, 0.5, 70), (2, 0.5, 90), (3, 0.5, 95), (3.5, 0.5, 70)),),
            PEDAL_HAT: (((1, 0.5, 80), (3, 0.5, 80)),),
            KICK: (((0, 0.5, 45), (1, 0.5, 35), (2, 0.5, 45), (3, 0.5, 35)),),
            SNARE: ((), ((2.5, 0.25, 55),)),
        },
        bass=(((0, 0.9, "root"), (1, 0.9, "third"), (2, 0.9, "fifth"), (3, 0.9, "walk")),),
        comp=(((0, 0.6), (1.5, 0.5)), ((1, 0.5), (3, 0.5))),
        comp_arpeggio=False,
        melody_rhythms=(
            ((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 1), (2.5, 0.5), (3, 1)),
            ((0, 1), (1, 0.5), (1.5, 1.5), (3, 0.5), (3.5, 0.5)),
            ((0.5, 0.5), (1, 1), (2, 0.5), (2.5, 1.5)),
            ((0, 1.5), (1.5, 0.5), (2, 0.5), (2.5, 0.5), (3, 1)),
        ),
        seventh_dominant=True,
    ),
}


@dataclass(frozen=True)
class Note:
    """One note event. ``start`` and ``duration`` are in beats (quarter notes) from the clip start."""

    channel: int
    pitch: int
    start: float
    duration: float
    velocity: int


@dataclass
class Arrangement:
    """A rendered-to-be piece: ``tempo`` quarter notes per minute, ``length_beats`` long, GM programs per
    channel (drum channel: the kit's bank-128 program), and its notes."""

    tempo: int
    beats_per_bar: int
    length_beats: float
    programs: dict[int, int]
    notes: list[Note] = field(default_factory=list)
    progression: list[str] = field(default_factory=list)


def _swing(position: float) -> float:
    """Move an off-beat eighth (``x.5``) to two thirds of the beat; other positions stay."""
    beat = math.floor(position + 1e-9)
    frac = position - beat
    return beat + 2.0 / 3.0 if abs(frac - 0.5) < 1e-6 else position


def register_tonic(tonic: int, centre: int) -> int:
    """MIDI pitch of pitch class ``tonic`` (0 = C) within [centre - 3, centre + 8]; ``centre`` is a C."""
    return centre + (tonic + 3) % 12 - 3


def progression(mode: str, units: int, rng: np.random.Generator, seventh_dominant: bool) -> list[str]:
    """Chord symbols, one per harmonic unit: starts on the tonic, ends V -> tonic when there are three units
    or more, stays on the tonic otherwise."""
    tonic = "I" if mode == "major" else "i"
    table = MAJOR_NEXT if mode == "major" else MINOR_NEXT
    dominant = "V7" if seventh_dominant else "V"
    if units <= 2:
        return [tonic] * units
    chords = [tonic]
    while len(chords) < units - 2:
        options = [c for c in table[chords[-1]] if c != "V" or len(chords) < units - 3]
        chords.append(str(rng.choice(options)))
    return chords + [dominant, tonic]


def _voicing(root_pitch: int, tones: tuple[int, ...], centre: int) -> list[int]:
    """Close-position voicing of the chord whose lowest note lies nearest below ``centre``."""
    best: list[int] = []
    for inversion in range(len(tones)):
        pitches = sorted(root_pitch + t for t in tones)
        for _ in range(inversion):
            pitches = pitches[1:] + [pitches[0] + 12]
        shift = 12 * round((centre - (pitches[0] + pitches[-1]) / 2) / 12)
        candidate = [p + shift for p in pitches]
        if not best or abs(sum(candidate) / len(candidate) - centre) < abs(sum(best) / len(best) - centre):
            best = candidate
    return best


def arrange(
    *,
    style: str,
    tempo: int,
    tonic: int,
    mode: str,
    lead_program: int,
    chord_program: int,
    duration: float,
    rng: np.random.Generator,
) -> Arrangement:
    """Compose a clip of ``duration`` seconds (the last chord is held to the end).

    Args:
        style: a key of :data:`STYLES`.
        tempo: quarter notes per minute.
        tonic: pitch class 0..11 (0 = C).
        mode: ``"major"`` or ``"minor"``.
        lead_program, chord_program: GM programs (0-based) of the melody and chord instruments.
        duration: clip length in seconds.
        rng: source of every random choice.
    """
    if style not in STYLES:
        raise ValueError(f"style: expected one of {sorted(STYLES)}, got {style!r}")
    if mode not in ("major", "minor"):
        raise ValueError(f"mode: expected 'major' or 'minor', got {mode!r}")
    if not 0 <= tonic < 12:
        raise ValueError(f"tonic: expected a pitch class 0..11, got {tonic}")
    spec = STYLES[style]
    length_beats = duration * tempo / 60.0
    beats_per_chord = spec.beats_per_chord
    while length_beats // beats_per_chord < 3 and beats_per_chord % 2 == 0:
        beats_per_chord //= 2  # a short clip changes chords faster, so that it still has a cadence
    units = max(1, int(length_beats // beats_per_chord))
    chords = progression(mode, units, rng, spec.seventh_dominant)
    table = MAJOR_CHORDS if mode == "major" else MINOR_CHORDS
    n_bars = math.ceil(length_beats / spec.beats_per_bar) + 1
    bar_beats = spec.beats_per_bar
    timing: Callable[[float], float] = _swing if spec.swing else float

    def chord_at(beat: float) -> Chord:
        return table[chords[min(int(beat // beats_per_chord), units - 1)]]

    notes: list[Note] = []

    def add(channel: int, pitch: int, start: float, dur: float, velocity: int) -> None:
        on, off = timing(start), timing(start + dur)
        if on < length_beats:
            velocity = int(np.clip(velocity + rng.integers(-6, 7), 1, 127))
            notes.append(Note(channel, int(pitch), on, min(off, length_beats + RELEASE_BEATS) - on, velocity))

    # Drums.
    for key, bars in spec.drums.items():
        for bar in range(n_bars):
            for pos, dur, vel in bars[bar % len(bars)]:
                add(DRUM_CHANNEL, key, bar * bar_beats + pos, dur, vel)

    # Bass: chord roots on strong beats, in the low register.
    bass_tonic = register_tonic(tonic, 36)
    for bar in range(n_bars):
        for pos, dur, step in spec.bass[bar % len(spec.bass)]:
            start = bar * bar_beats + pos
            chord = chord_at(start)
            root = bass_tonic + chord.root - (12 if chord.root > 7 else 0)
            if step == "root":
                pitch = root
            elif step == "fifth":
                pitch = root + 7 if root + 7 <= bass_tonic + 12 else root - 5
            elif step == "third":
                pitch = root + chord.tones[1]
            elif step == "octave":
                pitch = root + 12
            elif step == "walk":
                following = chord_at(start + 1)
                target = bass_tonic + following.root - (12 if following.root > 7 else 0)
                scale = HARMONIC_MINOR_SCALE if (mode == "minor" and following.root == 7) else (
                    MAJOR_SCALE if mode == "major" else MINOR_SCALE)
                below = [bass_tonic + 12 * o + s for o in (-1, 0, 1) for s in scale if
                         bass_tonic + 12 * o + s < target]
                pitch = max(below) if below else target - 1
            else:
                raise ValueError(f"bass step: unknown {step!r}")
            add(BASS_CHANNEL, pitch, start, dur, 92)

    # Chords: close voicings around middle C, whole chords or an upward arpeggio.
    chord_tonic = register_tonic(tonic, 60)
    arpeggio_index = 0
    for bar in range(n_bars):
        for pos, dur in spec.comp[bar % len(spec.comp)]:
            start = bar * bar_beats + pos
            chord = chord_at(start)
            voicing = _voicing(chord_tonic + chord.root, chord.tones, 62)
            if spec.comp_arpeggio:
                pitch = voicing[arpeggio_index % len(voicing)] + (12 if arpeggio_index % 8 >= 4 else 0)
                add(CHORD_CHANNEL, pitch, start, dur * 1.9, 80)
                arpeggio_index += 1
            else:
                for pitch in voicing:
                    add(CHORD_CHANNEL, pitch, start, dur, 76)

    notes.extend(_melody(spec, beats_per_chord, chords, table, tonic, mode, length_beats, rng, timing))
    programs = {LEAD_CHANNEL: lead_program, CHORD_CHANNEL: chord_program, BASS_CHANNEL: spec.bass_program,
                DRUM_CHANNEL: spec.drum_kit}
    notes.sort(key=lambda n: (n.start, n.channel, n.pitch))
    return Arrangement(tempo, bar_beats, length_beats, programs, notes, chords)


def _melody(spec: StyleSpec, beats_per_chord: int, chords: list[str], table: dict[str, Chord], tonic: int,
            mode: str, length_beats: float, rng: np.random.Generator,
            timing: Callable[[float], float]) -> list[Note]:
    """A stepwise tune over the progression: chord tones on strong beats, the tonic at the end."""
    lead_tonic = register_tonic(tonic, 72)
    low, high = lead_tonic - 5, lead_tonic + 9
    units = len(chords)
    final_start = (units - 1) * beats_per_chord if units > 1 else None

    def scale_pitches(chord: Chord) -> list[int]:
        scale = MAJOR_SCALE if mode == "major" else (HARMONIC_MINOR_SCALE if chord.root == 7 else MINOR_SCALE)
        pitches = [lead_tonic + 12 * octave + step for octave in (-1, 0, 1) for step in scale]
        return [p for p in pitches if low <= p <= high]

    def chord_pitches(chord: Chord) -> list[int]:
        return [p for p in scale_pitches(chord) if (p - lead_tonic - chord.root) % 12 in chord.tones]

    notes: list[Note] = []
    previous = int(rng.choice([lead_tonic, lead_tonic + (4 if mode == "major" else 3), lead_tonic + 7]))
    bar = 0
    while bar * spec.beats_per_bar < length_beats:
        rhythm = spec.melody_rhythms[int(rng.integers(len(spec.melody_rhythms)))]
        for pos, dur in rhythm:
            start = bar * spec.beats_per_bar + pos
            if start >= length_beats or (final_start is not None and start >= final_start):
                break
            chord = table[chords[min(int(start // beats_per_chord), units - 1)]]
            if not notes:
                pitch = previous
            elif abs(pos - round(pos)) < 1e-6:
                target = previous + int(rng.integers(-4, 5))
                pitch = min(chord_pitches(chord), key=lambda p: (abs(p - target), p))
            else:
                options = [p for p in scale_pitches(chord) if 0 < abs(p - previous) <= 4]
                pitch = int(rng.choice(options)) if options else previous
            velocity = 100 if abs(pos - round(pos)) < 1e-6 else 90
            on, off = timing(start), timing(min(start + dur, length_beats))
            notes.append(Note(LEAD_CHANNEL, pitch, on, max(off - on, 0.1), velocity))
            previous = pitch
        bar += 1
    if final_start is not None:
        end = min(final_start + spec.beats_per_bar * 2, length_beats + RELEASE_BEATS)
        notes.append(Note(LEAD_CHANNEL, lead_tonic, timing(final_start), end - timing(final_start), 100))
    return notes


def to_midi(arrangement: Arrangement, *, reverb: int = 40) -> mido.MidiFile:
    """A type-0 Standard MIDI File of the arrangement (one track, tempo at tick 0).

    ``reverb`` is the CC91 send (0..127) of the pitched channels; drums get half of it.
    """
    mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    events: list[tuple[int, int, mido.Message | mido.MetaMessage]] = []
    events.append((0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(arrangement.tempo))))
    meter = mido.MetaMessage("time_signature", numerator=arrangement.beats_per_bar, denominator=4)
    events.append((0, 0, meter))
    volumes = {LEAD_CHANNEL: 110, CHORD_CHANNEL: 100, BASS_CHANNEL: 100, DRUM_CHANNEL: 100}
    for channel, program in sorted(arrangement.programs.items()):
        events.append((0, 1, mido.Message("program_change", channel=channel, program=program)))
        send = reverb // 2 if channel == DRUM_CHANNEL else reverb
        for control, value in ((7, volumes[channel]), (91, send), (93, 0)):  # volume, reverb, chorus send
            message = mido.Message("control_change", channel=channel, control=control, value=value)
            events.append((0, 1, message))
    for note in arrangement.notes:
        on = round(note.start * TICKS_PER_BEAT)
        off = max(on + 1, round((note.start + note.duration) * TICKS_PER_BEAT))
        # Note-offs sort before note-ons at the same tick so that repeated pitches retrigger.
        events.append((on, 3, mido.Message("note_on", channel=note.channel, note=note.pitch,
                                           velocity=note.velocity)))
        events.append((off, 2, mido.Message("note_off", channel=note.channel, note=note.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mid
