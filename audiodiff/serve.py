"""`python -m audiodiff.serve model=<export folder | run dir | .ckpt> host=127.0.0.1 port=7860 device=cpu`.

Starts a local web page (`audiodiff.web.server`): type a prompt, set duration, steps, guidance, seed and an optional
negative prompt, generate, listen, download the wav and see its spectrogram. Stop with Ctrl+C.
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
    from audiodiff.generate import model_path
    from audiodiff.pipeline import AudioDiffusionPipeline
    from audiodiff.web.server import Studio, StudioServer

    pipe = AudioDiffusionPipeline.from_pretrained(model_path(cfg), device=cfg.device)
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
