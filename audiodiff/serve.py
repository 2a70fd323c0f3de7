"""`python -m audiodiff.serve model=<export folder | run dir | .ckpt> host=127.0.0.1 port=7860 device=cpu`.

Starts a local web page (`audiodiff.web.server`): type a prompt, set duration, steps, guidance, seed and an optional
negative prompt, generate, listen, download the wav and see its spectrogram. Stop with Ctrl+C. `adapter=path:strength`
(or a list) loads LoRA adapters as `generate` does; the page has a strength field for each. Every clip carries
the watermark as `generate`'s do (`watermark=false` turns it off; the clip's metadata says which);
`prompt_policy=<file>` refuses prompts as `generate` does, the page showing the rule; `guard.near_copy=true`
checks each clip against the model's near-copy index as `generate` does, the page naming the training clip of a
refusal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from audiodiff import cli

if TYPE_CHECKING:
    from audiodiff.web.server import StudioServer

log = logging.getLogger(__name__)


def build_server(cfg: DictConfig) -> StudioServer:
    """Load the model named by `cfg.model` and bind the server to `cfg.host`:`cfg.port` (not yet serving)."""
    from audiodiff.generate import adapter_specs, model_path, near_copy_guard, prompt_policy, watermark_option
    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.utils.settings import flag
    from audiodiff.web.server import Studio, StudioServer

    model = model_path(cfg)
    pipe = AudioDiffusionPipeline.from_pretrained(model, device=cfg.device, watermark=watermark_option(cfg),
                                                  near_copy_guard=near_copy_guard(cfg, model))
    pipe.prompt_policy = prompt_policy(cfg)
    for path, strength in adapter_specs(cfg.get("adapter")):
        pipe.load_adapter(path, strength, force=flag(cfg, "force_adapter"))
    return StudioServer(Studio(pipe, keep=int(cfg.keep)), host=str(cfg.host), port=int(cfg.port))


def main(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    server = build_server(cfg)
    log.info("serving %s at %s (Ctrl+C stops)", cfg.model, server.url)
    print(f"open {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    cli.main("audiodiff.serve", "serve", main, __doc__)
