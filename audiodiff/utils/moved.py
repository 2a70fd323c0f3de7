"""The module names that moved when the package took its layered layout (0.2): old → new.

Stored configurations (checkpoints, resume signatures) may still name the old modules; :func:`current_name` reads
such a dotted name as today's. `audiodiff._moved` keeps the old names importable for one release.
"""

from __future__ import annotations

MOVED: dict[str, str] = {
    "audiodiff.autoencoder_training": "audiodiff.training.autoencoder.run",
    "audiodiff.build": "audiodiff.models.build",
    "audiodiff.data.corpora": "audiodiff.benchmarks",
    "audiodiff.data.corpora.captions": "audiodiff.benchmarks.captions",
    "audiodiff.data.corpora.midi": "audiodiff.benchmarks.music.midi",
    "audiodiff.data.corpora.music": "audiodiff.benchmarks.music.corpus",
    "audiodiff.data.corpora.sfx": "audiodiff.benchmarks.sfx.corpus",
    "audiodiff.data.corpora.sfx_captions": "audiodiff.benchmarks.sfx.captions",
    "audiodiff.data.corpora.soundfont": "audiodiff.benchmarks.music.soundfont",
    "audiodiff.data.prepare": "audiodiff.prepare",
    "audiodiff.latent_encoding": "audiodiff.training.encode",
    "audiodiff.lightning": "audiodiff.training",
    "audiodiff.lightning.autoencoder": "audiodiff.training.autoencoder.task",
    "audiodiff.lightning.callbacks": "audiodiff.training.callbacks",
    "audiodiff.lightning.ema": "audiodiff.training.ema",
    "audiodiff.lightning.gan": "audiodiff.training.gan",
    "audiodiff.lightning.module": "audiodiff.training.diffusion.task",
    "audiodiff.lightning.resume": "audiodiff.training.resume",
    "audiodiff.lightning.signals": "audiodiff.training.signals",
    "audiodiff.lightning.vocoder": "audiodiff.training.vocoder.task",
    "audiodiff.metrics": "audiodiff.evaluation",
    "audiodiff.metrics.adherence": "audiodiff.evaluation.adherence",
    "audiodiff.metrics.arrays": "audiodiff.evaluation.arrays",
    "audiodiff.metrics.attributes": "audiodiff.benchmarks.attributes",
    "audiodiff.metrics.attributes.check": "audiodiff.benchmarks.check",
    "audiodiff.metrics.attributes.classifier": "audiodiff.benchmarks.classifier",
    "audiodiff.metrics.attributes.features": "audiodiff.benchmarks.features",
    "audiodiff.metrics.attributes.fit_music": "audiodiff.benchmarks.music.fit",
    "audiodiff.metrics.attributes.fit_sfx": "audiodiff.benchmarks.sfx.fit",
    "audiodiff.metrics.attributes.music": "audiodiff.benchmarks.music.attributes",
    "audiodiff.metrics.attributes.music_net": "audiodiff.benchmarks.music.instrument_net",
    "audiodiff.metrics.attributes.roundtrip": "audiodiff.benchmarks.roundtrip",
    "audiodiff.metrics.attributes.score": "audiodiff.benchmarks.score",
    "audiodiff.metrics.attributes.sfx": "audiodiff.benchmarks.sfx.attributes",
    "audiodiff.metrics.classifier_scores": "audiodiff.evaluation.classifier_scores",
    "audiodiff.metrics.contrastive": "audiodiff.evaluation.embedders.contrastive",
    "audiodiff.metrics.contrastive.captions": "audiodiff.training.embedder.captions",
    "audiodiff.metrics.contrastive.embedder": "audiodiff.evaluation.embedders.contrastive.embedder",
    "audiodiff.metrics.contrastive.evaluate": "audiodiff.evaluation.embedders.contrastive.evaluate",
    "audiodiff.metrics.contrastive.model": "audiodiff.evaluation.embedders.contrastive.model",
    "audiodiff.metrics.contrastive.task": "audiodiff.training.embedder.task",
    "audiodiff.metrics.contrastive.train": "audiodiff.training.embedder.run",
    "audiodiff.metrics.embedders": "audiodiff.evaluation.embedders",
    "audiodiff.metrics.embedders.base": "audiodiff.evaluation.embedders.base",
    "audiodiff.metrics.embedders.clap": "audiodiff.evaluation.embedders.clap",
    "audiodiff.metrics.embedders.encodec": "audiodiff.evaluation.embedders.encodec",
    "audiodiff.metrics.embedders.panns": "audiodiff.evaluation.embedders.panns",
    "audiodiff.metrics.embedders.vggish": "audiodiff.evaluation.embedders.vggish",
    "audiodiff.metrics.embedding_cache": "audiodiff.evaluation.embedding_cache",
    "audiodiff.metrics.evaluation": "audiodiff.evaluation.run",
    "audiodiff.metrics.fad": "audiodiff.evaluation.fad",
    "audiodiff.metrics.memorization": "audiodiff.evaluation.memorization",
    "audiodiff.metrics.reconstruction": "audiodiff.evaluation.reconstruction",
    "audiodiff.metrics.report": "audiodiff.evaluation.report",
    "audiodiff.metrics.seams": "audiodiff.evaluation.seams",
    "audiodiff.metrics.vocoder_quality": "audiodiff.evaluation.vocoder_quality",
    "audiodiff.model": "audiodiff.models.model",
    "audiodiff.stages": "audiodiff.training.stages",
    "audiodiff.vocoder_training": "audiodiff.training.vocoder.run",
    "audiodiff.vocoders.discriminators": "audiodiff.adversarial.discriminators",
}


def current_name(dotted: str) -> str:
    """`dotted` (a module or `module.attribute` path) with its longest moved module prefix replaced by the new
    module; any other string comes back unchanged."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in MOVED:
            return ".".join([MOVED[prefix], *parts[cut:]])
    return dotted
