"""The model's processor without torch or transformers: what the device needs to turn keyframes and a
chat into model inputs, and generated tokens back into (streamed) text.

An export ships the Hugging Face processor files in its ``processor/`` folder (tokenizer.json,
tokenizer_config.json, the chat template, the image processor's parameters, config.json).
:meth:`Processor.from_dir` reads them with the libraries the device install has (numpy, pillow,
``tokenizers``, jinja2) and reproduces transformers 5.x's results:

* :class:`ImageProcessor` — Qwen2-VL / Qwen2.5-VL's image processor: ``smart_resize`` to a multiple
  of patch x merge within the pixel budget (bicubic, as transformers' PIL backend), rescale,
  normalise with the config's mean/std (fused as transformers' default torchvision backend does),
  repeat each frame ``temporal_patch_size`` times and flatten patches in merge-window order;
* :class:`Tokenizer` — the ``tokenizers`` tokenizer from tokenizer.json, with the HF call and
  decode signatures the prompt helpers use (so either tokenizer works there);
* :class:`ChatTemplate` — the chat template rendered with jinja2 as transformers renders it;
* :class:`TextStream` — the incremental detokeniser behind streamed answers (transformers'
  ``TextStreamer`` rules).

Each part is written here by hand because its reference lives in transformers, which pulls torch
and is not installed on a Jetson (``pip install ".[device]"``); tests/test_processing.py checks
every part against transformers on the workstation (equal pixel values, token ids and text).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_PAD = "<|image_pad|>"
PROCESSOR_CONFIG = "processor_config.json"  # transformers >= 5 nests the image processor here
IMAGE_CONFIG = "preprocessor_config.json"  # older checkpoints (and the hub's Qwen2.5-VL)
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_JSON = "chat_template.json"  # legacy; transformers prefers it when present
CHAT_TEMPLATE_JINJA = "chat_template.jinja"
# The named special tokens transformers passes to chat templates (PreTrainedTokenizerBase).
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
QWEN2_VL_IMAGE_PROCESSORS = (
    "Qwen2VLImageProcessor",
    "Qwen2VLImageProcessorFast",
    "Qwen2VLImageProcessorPil",
)


class ProcessorError(ValueError):
    """A processor folder is missing a file, or a file says something this module cannot honour."""


# -- images --------------------------------------------------------------------------------------


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, the area within
    [``min_pixels``, ``max_pixels``], the aspect ratio kept as closely as possible.

    Copied from transformers' ``qwen2_vl.image_processing_qwen2_vl.smart_resize`` (same arithmetic,
    including Python's round-half-to-even), which the device cannot import."""
    ratio = max(height, width) / min(height, width)
    if ratio > 200:
        raise ProcessorError(f"image {width}x{height}: aspect ratio must be below 200, got {ratio}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ImageProcessor:
    """Qwen2-VL's image processor for one RGB image at a time; defaults are transformers'."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)  # OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    resample: int = 3  # PIL's BICUBIC

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "image processor config") -> ImageProcessor:
        """From an image processor's saved parameters (``size`` holds the pixel budget as
        ``shortest_edge``/``longest_edge``; older files say ``min_pixels``/``max_pixels``, which win,
        as in transformers)."""
        kind = config.get("image_processor_type")
        if kind is not None and kind not in QWEN2_VL_IMAGE_PROCESSORS:
            raise ProcessorError(
                f"{source}: image_processor_type {kind!r} is not Qwen2-VL's "
                f"({', '.join(QWEN2_VL_IMAGE_PROCESSORS)}); this runtime only implements that one"
            )
        size = config.get("size") or {}
        if not isinstance(size, Mapping) or (size and not {"shortest_edge", "longest_edge"} <= set(size)):
            raise ProcessorError(
                f"{source}: size must give the pixel budget as shortest_edge and longest_edge, got {size!r}"
            )
        defaults = cls()
        try:
            min_pixels = config.get("min_pixels") or size.get("shortest_edge") or defaults.min_pixels
            max_pixels = config.get("max_pixels") or size.get("longest_edge") or defaults.max_pixels

            def pick(key: str, default: Any) -> Any:
                value = config.get(key)
                return default if value is None else value

            out = cls(
                patch_size=int(pick("patch_size", defaults.patch_size)),
                temporal_patch_size=int(pick("temporal_patch_size", defaults.temporal_patch_size)),
                merge_size=int(pick("merge_size", defaults.merge_size)),
                min_pixels=int(min_pixels),
                max_pixels=int(max_pixels),
                image_mean=tuple(float(x) for x in pick("image_mean", defaults.image_mean)),
                image_std=tuple(float(x) for x in pick("image_std", defaults.image_std)),
                rescale_factor=float(pick("rescale_factor", defaults.rescale_factor)),
                do_resize=bool(pick("do_resize", True)),
                do_rescale=bool(pick("do_rescale", True)),
                do_normalize=bool(pick("do_normalize", True)),
                resample=int(pick("resample", defaults.resample)),
            )
        except (TypeError, ValueError) as e:
            raise ProcessorError(f"{source}: unreadable image processor parameter ({e})") from None
        if len(out.image_mean) != 3 or len(out.image_std) != 3:
            raise ProcessorError(f"{source}: image_mean and image_std need 3 values (RGB)")
        return out

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of this size is resized to."""
        if not self.do_resize:
            return height, width
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def grid_thw(self, height: int, width: int) -> tuple[int, int, int]:
        """The vision tower's (t, h, w) patch grid for an image of this size."""
        h, w = self.output_size(height, width)
        return 1, h // self.patch_size, w // self.patch_size

    def tokens_per_image(self, height: int, width: int) -> int:
        """Visual tokens (merged patches) an image of this size becomes in the prompt."""
        _, gh, gw = self.grid_thw(height, width)
        return (gh * gw) // (self.merge_size**2)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """HxWx3 uint8 RGB -> (pixel_values ``[gh*gw, 3*T*P*P]`` float32, grid (1, gh, gw))."""
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
            shape = getattr(image, "shape", None)
            raise ProcessorError(f"image must be an HxWx3 uint8 RGB array, got {shape}")
        if image.shape[2] != 3:
            raise ProcessorError(f"image must have 3 channels (RGB), got {image.shape[2]}")
        height, width = image.shape[:2]
        h, w = self.output_size(height, width)
        if h % self.factor or w % self.factor:  # only without do_resize
            raise ProcessorError(
                f"image {width}x{height}: both sides must be multiples of patch x merge = {self.factor}"
            )
        if (h, w) != (height, width):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((w, h), resample=self.resample))
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        chw = self._rescale_and_normalize(chw)
        return self._patchify(chw), (1, h // self.patch_size, w // self.patch_size)

    def _rescale_and_normalize(self, chw: np.ndarray) -> np.ndarray:
        """Rescale then normalise, fused as transformers' default (torchvision) backend does:
        ``(x - mean/scale) / (std/scale)`` in float32, so values match it to the last bits."""
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            if self.do_rescale:
                mean = mean * np.float32(1.0 / self.rescale_factor)
                std = std * np.float32(1.0 / self.rescale_factor)
            normalised: np.ndarray = ((chw - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
            return normalised
        if self.do_rescale:
            rescaled: np.ndarray = (chw * np.float32(self.rescale_factor)).astype(np.float32)
            return rescaled
        return chw

    def _patchify(self, chw: np.ndarray) -> np.ndarray:
        """Flatten into rows of ``3 x T x P x P`` in the vision tower's order: merge windows
        row-major, the merge_size^2 patches inside each window row-major; each frame repeated
        T times (one still image fills the temporal patch)."""
        c, h, w = chw.shape
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = h // p, w // p
        patches = chw.reshape(c, gh // m, m, p, gw // m, m, p)
        patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, P, P)
        patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], t, p, p))
        return np.ascontiguousarray(patches.reshape(gh * gw, c * t * p * p), dtype=np.float32)


# -- text ----------------------------------------------------------------------------------------


class Tokenizer:
    """A ``tokenizers.Tokenizer`` (tokenizer.json) behind the subset of transformers' tokenizer
    API this project calls: ``tok(text, add_special_tokens=False)["input_ids"]``, ``decode(ids,
    skip_special_tokens=...)``, ``convert_tokens_to_ids`` (egovlm/edge/backends/prompt.py and
    :class:`TextStream` accept either)."""

    def __init__(self, backend: Any, special_tokens_map: Mapping[str, str] | None = None) -> None:
        self.backend = backend
        self.backend.no_truncation()
        self.backend.no_padding()
        self.special_tokens_map = dict(special_tokens_map or {})

    @classmethod
    def from_dir(cls, folder: Path) -> Tokenizer:
        """tokenizer.json plus the named special tokens of tokenizer_config.json; every special
        token the config names must be in the vocabulary (else ids would silently differ)."""
        from tokenizers import Tokenizer as RustTokenizer

        path = folder / TOKENIZER
        if not path.is_file():
            raise ProcessorError(
                f"{path}: missing (the processor folder must hold the fast tokenizer's file)"
            )
        backend = RustTokenizer.from_file(str(path))
        config = _read_json(folder / TOKENIZER_CONFIG, required=False)
        named = {k: _token_text(config[k]) for k in SPECIAL_TOKEN_NAMES if config.get(k) is not None}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        if isinstance(extra, Mapping):  # transformers also accepts {"image_token": "<|image_pad|>"}
            extra = list(extra.values())
        for token in [*named.values(), *(_token_text(t) for t in extra)]:
            if backend.token_to_id(token) is None:
                raise ProcessorError(
                    f"{folder / TOKENIZER_CONFIG} names special token {token!r}, which {TOKENIZER} lacks"
                )
        return cls(backend, named)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """As transformers' TokenizersBackend decodes; it skips its space clean-up for BPE
        tokenizers (Qwen's), which is the only kind :meth:`from_dir` is used with here."""
        return str(self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens))

    def convert_tokens_to_ids(self, token: str) -> int:
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise ProcessorError(f"token {token!r} is not in the tokenizer's vocabulary")
        return int(token_id)


class ChatTemplate:
    """A chat template rendered the way transformers' ``apply_chat_template`` renders it
    (``utils.chat_template_utils._compile_jinja_template`` / ``render_jinja_template``): an
    immutable sandboxed jinja2 environment with ``trim_blocks``, ``lstrip_blocks``, loop controls
    and ``{% generation %}`` blocks; ``tojson`` without HTML escaping, ``raise_exception`` and
    ``strftime_now``; messages reduced to plain JSON data, keys whose value is None dropped; the
    tokenizer's named special tokens (``eos_token``, ...) as variables."""

    def __init__(self, source: str, variables: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.variables = dict(variables or {})
        self._template = _jinja_environment().from_string(source)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        chat = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
        return str(
            self._template.render(
                **_plain(self.variables),
                messages=_plain(chat),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
            )
        )


def _jinja_environment() -> Any:
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}…{% endgeneration %}`` renders its body (transformers uses it to mark
        assistant tokens for training masks; rendering is unchanged by it)."""

        tags = {"generation"}  # noqa: RUF012 (jinja2 declares it a plain set attribute)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _plain(value: Any) -> Any:
    """Plain JSON data for the template (as transformers' ``_plain_template_data``): anything else
    becomes an inert ``<TypeName>`` placeholder, so a template never reaches a live object."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    # Subclasses (str/int enums, numpy's float64) back to the base type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


class TextStream:
    """Incremental detokeniser for streamed answers, fed one token (or a few) at a time.

    transformers' ``TextStreamer`` rules, reimplemented because the device has no transformers:
    decode everything since the last flush; after a newline emit it all and start over; after a
    CJK character emit up to it; otherwise emit up to the last space, holding back a word that the
    next token may still change (and bytes of a character split across tokens). :meth:`end` emits
    the rest. The pieces joined equal ``decode(all tokens)``."""

    def __init__(
        self, tokenizer: Any, on_text: Callable[[str], Any], skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.skip_special_tokens = skip_special_tokens
        self._cache: list[int] = []
        self._emitted = 0  # characters of decode(cache) already emitted

    def put(self, token_ids: Sequence[int]) -> None:
        self._cache.extend(int(t) for t in token_ids)
        text = self._decode()
        if text.endswith("\n"):
            piece = text[self._emitted :]
            self._cache, self._emitted = [], 0
        elif text and _is_cjk(ord(text[-1])):
            piece = text[self._emitted :]
            self._emitted += len(piece)
        else:
            piece = text[self._emitted : text.rfind(" ") + 1]
            self._emitted += len(piece)
        self._emit(piece)

    def end(self) -> None:
        piece = self._decode()[self._emitted :] if self._cache else ""
        self._cache, self._emitted = [], 0
        self._emit(piece)

    def _decode(self) -> str:
        return str(self.tokenizer.decode(self._cache, skip_special_tokens=self.skip_special_tokens))

    def _emit(self, piece: str) -> None:
        if piece:
            self.on_text(piece)


def _is_cjk(cp: int) -> bool:
    """The CJK Unified Ideographs blocks (TextStreamer's ``_is_chinese_char``)."""
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


# -- the processor -------------------------------------------------------------------------------


class Processor:
    """Image processor + tokenizer + chat template of one model, loaded from a processor folder."""

    def __init__(self, image: ImageProcessor, tokenizer: Tokenizer, chat_template: ChatTemplate) -> None:
        self.image_processor = image
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def from_dir(cls, folder: str | Path) -> Processor:
        """Read a processor folder as transformers 5.x saves it (``save_pretrained``), or as the
        hub's Qwen2.5-VL ships it (preprocessor_config.json, chat_template.json)."""
        root = Path(folder)
        if not root.is_dir():
            raise ProcessorError(f"processor folder not found: {root}")
        tokenizer = Tokenizer.from_dir(root)
        return cls(
            _image_processor(root),
            tokenizer,
            ChatTemplate(_chat_template_source(root), tokenizer.special_tokens_map),
        )

    @classmethod
    def from_transformers(cls, processor: Any) -> Processor:
        """The same processor from a loaded transformers one (the workstation's export builds its
        runners from the checkpoint's): saved to a temporary folder and read back with
        :meth:`from_dir`, i.e. exactly what the export ships and the device loads."""
        with tempfile.TemporaryDirectory(prefix="egovlm-processor-") as tmp:
            processor.save_pretrained(tmp)
            return cls.from_dir(tmp)

    @classmethod
    def of(cls, processor: Any) -> Processor:
        """``processor`` itself if it is one of these, else converted from transformers'."""
        if isinstance(processor, Processor):
            return processor
        if hasattr(processor, "save_pretrained"):
            return cls.from_transformers(processor)
        raise TypeError(f"expected an egovlm Processor or a transformers processor, got {type(processor)}")

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
    ) -> str:
        """The rendered prompt text (transformers' signature; ``tokenize=True`` is not offered:
        tokenise the text with :attr:`tokenizer` or use :meth:`prompt_ids`)."""
        if tokenize:
            raise ValueError(
                "Processor.apply_chat_template renders text only; use prompt_ids() for token ids"
            )
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]], tokens_per_image: int) -> list[int]:
        """Token ids of chat ``messages`` with each image placeholder expanded to
        ``tokens_per_image`` copies (the processor's expansion, without touching pixels)."""
        text = self.apply_chat_template(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text.replace(IMAGE_PAD, IMAGE_PAD * tokens_per_image))

    def pixel_values(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One HxWx3 uint8 RGB image -> (pixel_values, grid_thw) for the vision tower."""
        return self.image_processor(image)

    def decode(self, ids: Sequence[int]) -> str:
        """Generated tokens -> text, special tokens skipped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _image_processor(root: Path) -> ImageProcessor:
    """Image processor parameters: processor_config.json's nested block first, then
    preprocessor_config.json (transformers' order)."""
    nested = _read_json(root / PROCESSOR_CONFIG, required=False).get("image_processor")
    if isinstance(nested, Mapping):
        return ImageProcessor.from_config(nested, str(root / PROCESSOR_CONFIG))
    if (root / IMAGE_CONFIG).is_file():
        return ImageProcessor.from_config(_read_json(root / IMAGE_CONFIG), str(root / IMAGE_CONFIG))
    raise ProcessorError(
        f"{root}: no image processor parameters ({PROCESSOR_CONFIG} with an 'image_processor' block, "
        f"or {IMAGE_CONFIG}); re-export the model, which saves them"
    )


def _chat_template_source(root: Path) -> str:
    """The chat template transformers' processor would use: chat_template.json (legacy, wins when
    present), else chat_template.jinja, else tokenizer_config.json's ``chat_template``."""
    template: Any
    if (root / CHAT_TEMPLATE_JSON).is_file():
        source = root / CHAT_TEMPLATE_JSON
        template = _read_json(source).get("chat_template")
    elif (root / CHAT_TEMPLATE_JINJA).is_file():
        source = root / CHAT_TEMPLATE_JINJA
        template = source.read_text(encoding="utf-8")
    else:
        source = root / TOKENIZER_CONFIG
        template = _read_json(source, required=False).get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": "..."}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str) or not template:
        raise ProcessorError(
            f"{root}: no chat template ({CHAT_TEMPLATE_JINJA}, {CHAT_TEMPLATE_JSON} or a 'chat_template' "
            f"in {TOKENIZER_CONFIG}; {source.name} has none); re-export the model, which saves it"
        )
    return template


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ProcessorError(f"{path}: missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ProcessorError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ProcessorError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _token_text(token: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    return str(token["content"]) if isinstance(token, Mapping) else str(token)
