"""The prompt check counts, per prompt, the seeds whose clip has every asked attribute read back."""

from types import SimpleNamespace

import numpy as np
import torch

from audiodiff.benchmarks.sfx.corpus import synthesize
from audiodiff.evaluation.prompt_check import check_prompts, markdown_checks

SR = 16000


class ScriptedPipe:
    """Stands in for a model: for each prompt, the clips of the attributes scripted for each seed."""

    def __init__(self, script: dict[str, list[dict]]) -> None:
        self.script = script

    def __call__(self, prompts, seed, guidance=None, steps=None):
        clips = [synthesize(attrs, np.random.default_rng(s)) for attrs, s in zip(self.script[prompts[0]], seed,
                                                                                  strict=True)]
        length = max(len(c) for c in clips)
        audio = torch.zeros(len(clips), 1, length)
        for i, c in enumerate(clips):
            audio[i, 0, : len(c)] = torch.from_numpy(c)
        return SimpleNamespace(audio=audio, sample_rate=SR)


def test_clips_with_every_asked_attribute_count_as_right():
    right = {"kind": "beeps", "pitch": "high", "count": 3, "loudness": "loud"}
    two = {**right, "count": 2}
    pipe = ScriptedPipe({"three loud high beeps": [right] * 6 + [two] * 2,
                         "a rising sweep": [{"kind": "sweep", "direction": "falling", "loudness": "loud"}] * 4})
    asked = {"three loud high beeps": {"kind": "beeps", "count": 3, "pitch": "high", "loudness": "loud"}}
    beeps = check_prompts(pipe, "sfx", asked, seeds=8)[0]
    assert (beeps.right, beeps.seeds, beeps.misses) == (6, 8, {"count": 2})
    assert beeps.passes(6) and not beeps.passes(7)
    sweep = check_prompts(pipe, "sfx", {"a rising sweep": {"kind": "sweep", "direction": "rising"}}, seeds=4)[0]
    assert (sweep.right, sweep.misses) == (0, {"direction": 4})
    table = markdown_checks([beeps, sweep], need=6)
    assert "| three loud high beeps | kind=beeps, count=3, pitch=high, loudness=loud | 6/8 | count ×2 | yes |" in table
    assert table.rstrip().endswith("| NO |")
