"""What the pipeline needs of a near-copy guard, and what it reports: the guard itself (an index of a training set's
embeddings, `audiodiff.guard.NearCopyGuard`) lives above the pipeline, which sees only this protocol.

A guard looks at generated clips and says, for each, which training clip it is most similar to and whether that
similarity reaches its threshold. The pipeline then regenerates the flagged clip with another seed (`on_copy =
"regenerate"`, up to `tries` more seeds) or refuses it (`"refuse"`, or when every try was flagged), raising
`NearCopyRefused` with a message naming the training clip and the similarity against the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

OnCopy = Literal["regenerate", "refuse"]
COPY_SEED_STRIDE = 7_919_993  # try k of a flagged clip draws from seed + k · stride


@dataclass(frozen=True)
class CopyVerdict:
    """One clip compared with the training index."""

    similarity: float  # cosine similarity to the nearest training clip, in the guard's embedding
    threshold: float  # the index's calibrated threshold: similarity >= threshold is a near copy
    clip: str  # the nearest training clip: its audio path
    row: int  # its line in the training manifest (1-based)
    caption: str = ""  # its first caption

    @property
    def flagged(self) -> bool:
        return self.similarity >= self.threshold

    def describe(self) -> str:
        relation = ">=" if self.flagged else "<"
        return (f"training clip {self.clip} (manifest line {self.row}, \"{self.caption}\"): similarity "
                f"{self.similarity:.4f} {relation} threshold {self.threshold:.4f}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


@runtime_checkable
class OutputGuard(Protocol):
    """A near-copy check of generated audio.

    name: what the sidecar calls it (e.g. the embedder and index). on_copy: "regenerate" or "refuse".
    tries: seeds tried after a flagged one before refusing (regenerate only).
    check(audio [B, C, T] float32, sample_rate Hz) → one CopyVerdict per clip.
    """

    name: str
    on_copy: OnCopy
    tries: int

    def check(self, audio: Tensor, sample_rate: int) -> list[CopyVerdict]: ...


class NearCopyRefused(ValueError):
    """Generated clips the near-copy guard refused; the message names each one's prompt, seed and training clip.

    output: the whole GenerationOutput (refused clips included, for inspection; do not publish them);
    refused: indices of the refused clips in it.
    """

    def __init__(self, message: str, output: Any = None, refused: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.output = output
        self.refused = refused
