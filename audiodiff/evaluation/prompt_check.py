"""Does a model follow the prompts a reader is shown? Each prompt is generated with several seeds and its clips are
read back by the corpus's attribute extractors; a clip counts as right when every attribute the prompt asks for is
read back. The quick start prints this for the README's own examples.
"""

from __future__ import annotations

from dataclasses import dataclass

from audiodiff.benchmarks.attributes import corpus_metrics
from audiodiff.pipeline import AudioDiffusionPipeline


@dataclass(frozen=True)
class PromptCheck:
    """How often one prompt came out right."""

    prompt: str
    asked: dict  # attribute → value the prompt asks for
    right: int  # clips with every asked attribute read back
    seeds: int  # clips generated
    misses: dict  # attribute → clips where it was read otherwise

    def passes(self, need: int) -> bool:
        return self.right >= need


def check_prompts(pipe: AudioDiffusionPipeline, corpus: str, asked: dict[str, dict], seeds: int = 8,
                  guidance: float | None = None, steps: int | None = None) -> list[PromptCheck]:
    """Generate each prompt of `asked` ({prompt: {attribute: value}}) with seeds 0 … seeds − 1 and count the clips
    whose extracted attributes match every asked value (the extractor reads the asked kind's attributes, as in
    `audiodiff.evaluation.adherence`)."""
    if seeds < 1:
        raise ValueError(f"check_prompts: seeds must be >= 1, got {seeds}")
    extract, _ = corpus_metrics(corpus)
    results = []
    for prompt, truth in asked.items():
        out = pipe([prompt] * seeds, seed=list(range(seeds)), guidance=guidance, steps=steps)
        right, misses = 0, {}
        for wav in out.audio:
            got = extract(wav[0].numpy(), out.sample_rate, reference=truth)
            wrong = [k for k, v in truth.items() if got.get(k) != v]
            right += not wrong
            for k in wrong:
                misses[k] = misses.get(k, 0) + 1
        results.append(PromptCheck(prompt, dict(truth), right, seeds, misses))
    return results


def markdown_checks(results: list[PromptCheck], need: int) -> str:
    """A table: prompt, asked attributes, clips right of those generated, the attributes missed, pass or not."""
    lines = ["| prompt | asks | right | missed | ≥ " + f"{need} |", "|---|---|---|---|---|"]
    for r in results:
        asks = ", ".join(f"{k}={v}" for k, v in r.asked.items())
        missed = ", ".join(f"{k} ×{n}" for k, n in r.misses.items()) or "–"
        lines.append(f"| {r.prompt} | {asks} | {r.right}/{r.seeds} | {missed} | {'yes' if r.passes(need) else 'NO'} |")
    return "\n".join(lines)
