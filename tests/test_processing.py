"""egovlm.processing (the device's torch-free processor) against transformers on the same files: the
offline tiny and small models' processors give equal pixel values, prompt token ids, rendered chat
text, decoded and streamed text; the other file layouts transformers reads (the hub's
preprocessor_config.json, chat_template.json, a template inside tokenizer_config.json) are read the
same way; broken folders are refused naming the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jinja2.exceptions import TemplateError

pytest.importorskip("transformers", reason="the reference implementation (workstation venv only)")
from transformers import AutoImageProcessor, AutoProcessor, TextStreamer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from egovlm.contract import build_messages
from egovlm.frames import Frame
from egovlm.models.presets import PRESETS
from egovlm.processing import ImageProcessor, Processor, ProcessorError, TextStream

QUESTIONS: list[tuple[str, Mapping[str, str] | None]] = [
    ("What did I pick up first?", {"A": "a red cup", "B": "a blue book", "C": "the phone"}),
    ("Where did I leave my keys?", None),
    ("Où ai-je posé la tasse ? ☕", {"A": "sur la table", "B": "dans l'évier"}),
    ("我的钥匙在哪里？", {"A": "桌子上", "B": "口袋里"}),
    ("  tabs\tand  double  spaces, emoji 🙂👍🏽 and a literal <|im_end|> tag  ", None),
]
TEXTS = [
    "<think>The cup is red.</think>\n<keyframes>2, 5</keyframes>\n<answer>C</answer>",
    "Où est la tasse ? ☕ Dans l'évier.\nEt puis… rien.",
    "我的钥匙在桌子上。然后我走了",
    "emoji 🙂👍🏽 split across tokens, then more words",
    "trailing spaces   ",
]


@pytest.fixture(scope="module", params=["tiny", "small"])
def model(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"{request.param}_model_dir")


@pytest.fixture(scope="module")
def processors(model: tuple[str, Path]) -> tuple[Any, Processor]:
    _, path = model
    return AutoProcessor.from_pretrained(str(path), local_files_only=True), Processor.from_dir(path)


def _frames(n: int, size: tuple[int, int], seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    w, h = size
    return [
        Frame(index=i + 1, timestamp_s=1.5 * i, image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for i in range(n)
    ]


def test_pixel_values_equal_transformers(model: tuple[str, Path], processors: tuple[Any, Processor]) -> None:
    name, _ = model
    hf, ours = processors
    for frame in _frames(3, PRESETS[name].keyframe_size):
        ref = hf.image_processor(images=[frame.image], return_tensors="np")
        pixels, grid = ours.pixel_values(frame.image)
        assert grid == tuple(int(x) for x in ref["image_grid_thw"][0])
        assert pixels.dtype == np.float32 and pixels.shape == ref["pixel_values"].shape
        assert float(np.max(np.abs(pixels - ref["pixel_values"]))) <= 1e-6


@pytest.mark.parametrize("shape", [(100, 130), (300, 200), (57, 400)])
def test_resize_equals_transformers_pil_backend(tiny_model_dir: Path, shape: tuple[int, int]) -> None:
    """Off-size images are resized (smart_resize, bicubic) as transformers' PIL backend does; the
    torchvision backend's antialiased resize may differ by one uint8 level, which is why the
    runtime hands the processor keyframes already at the exported size."""
    config = json.loads((tiny_model_dir / "processor_config.json").read_text())["image_processor"]
    config.pop("image_processor_type")
    reference = Qwen2VLImageProcessorPil(**config)
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = reference(images=[image], return_tensors="np")
    pixels, grid = Processor.from_dir(tiny_model_dir).pixel_values(image)
    assert grid == tuple(int(x) for x in ref["image_grid_thw"][0])
    assert (grid[1] * 14, grid[2] * 14) != shape  # really resized
    assert float(np.max(np.abs(pixels - ref["pixel_values"]))) <= 1e-6


@pytest.mark.parametrize("n_frames", [1, 3])
def test_prompt_ids_and_text_equal_transformers(
    model: tuple[str, Path], processors: tuple[Any, Processor], n_frames: int
) -> None:
    name, _ = model
    hf, ours = processors
    frames = _frames(n_frames, PRESETS[name].keyframe_size)
    per_image = ours.image_processor.tokens_per_image(*frames[0].image.shape[:2])
    for question, options in QUESTIONS:
        messages = build_messages(frames, question, options)
        text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ours.apply_chat_template(messages, add_generation_prompt=True) == text
        # The full processor call (text + images) is the reference: it expands the image tokens itself.
        ref = hf(text=[text], images=[f.image for f in frames], return_tensors="np")["input_ids"][0]
        ids = ours.prompt_ids(messages, per_image)
        assert ids == [int(x) for x in ref]
        assert ids.count(ours.tokenizer.convert_tokens_to_ids("<|image_pad|>")) == n_frames * per_image


def test_decode_equals_transformers(processors: tuple[Any, Processor]) -> None:
    hf, ours = processors
    rng = np.random.default_rng(2)
    vocab = hf.tokenizer.backend_tokenizer.get_vocab_size()
    sequences = [ours.tokenizer.encode(t) for t in TEXTS]
    sequences += [[int(x) for x in rng.integers(0, vocab, 40)] for _ in range(20)]  # specials included
    for ids in sequences:
        for skip in (True, False):
            assert ours.tokenizer.decode(ids, skip_special_tokens=skip) == hf.tokenizer.decode(
                ids, skip_special_tokens=skip
            )
        assert ours.decode(ids) == hf.tokenizer.decode(ids, skip_special_tokens=True)


class _Recorder(TextStreamer):
    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.pieces: list[str] = []

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.pieces.append(text)


def test_text_stream_equals_text_streamer(processors: tuple[Any, Processor]) -> None:
    """Token by token, the same pieces at the same moments as transformers' TextStreamer, and
    together the full decode; words are held back until a space or newline completes them."""
    hf, ours = processors
    im_end = ours.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for text in TEXTS:
        ids = [*ours.tokenizer.encode(text), im_end]
        ref, pieces = _Recorder(hf.tokenizer), list[str]()
        stream = TextStream(ours.tokenizer, pieces.append)
        steps: list[tuple[int, int]] = []
        for token in ids:
            ref.put(np.asarray([token]))
            stream.put([token])
            steps.append((len(ref.pieces), len(pieces)))
        ref.end()
        stream.end()
        assert pieces == ref.pieces
        assert all(a == b for a, b in steps)  # emitted at the same tokens, not just equal in the end
        assert "".join(pieces) == hf.tokenizer.decode(ids, skip_special_tokens=True)
        assert len(pieces) > 1  # really incremental


def test_hub_layout_is_read_like_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The hub's Qwen2.5-VL layout: preprocessor_config.json with min/max_pixels (no nested block)
    and the template in the legacy chat_template.json, which transformers prefers to the .jinja."""
    folder = tmp_path / "hub"
    shutil.copytree(tiny_model_dir, folder)
    nested = json.loads((folder / "processor_config.json").read_text())
    image = nested.pop("image_processor")
    image.pop("size")
    image |= {"min_pixels": 3136, "max_pixels": 28 * 28 * 20, "image_mean": [0.5, 0.4, 0.3]}
    (folder / "processor_config.json").write_text(json.dumps(nested))
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    legacy = "{% for m in messages %}[{{ m['role'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": legacy}))

    hf, ours = AutoProcessor.from_pretrained(str(folder)), Processor.from_dir(folder)
    frames = _frames(1, (300, 200), seed=3)  # off-size: the pixel budget decides the grid
    messages = build_messages(frames, "q?")
    assert ours.apply_chat_template(messages, add_generation_prompt=True) == "[system][user]>"
    assert hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "[system][user]>"
    ref = AutoImageProcessor.from_pretrained(str(folder))
    assert ours.image_processor.max_pixels == ref.size["longest_edge"] == 28 * 28 * 20
    assert ours.image_processor.min_pixels == ref.size["shortest_edge"] == 3136
    assert ours.image_processor.image_mean == pytest.approx(ref.image_mean)
    _, grid = ours.pixel_values(frames[0].image)
    expected = ref(images=[frames[0].image], return_tensors="np")["image_grid_thw"][0]
    assert grid == tuple(int(x) for x in expected)


# The shape of the hub's Qwen2-VL / Qwen2.5-VL Instruct template: a namespace counter, a default
# system turn, ``add_vision_id``; the offline models ship a simpler one.
QWEN_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_hub_style_template_equals_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "qwen-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").write_text(QWEN_VL_TEMPLATE)
    hf, ours = AutoProcessor.from_pretrained(str(folder)), Processor.from_dir(folder)
    frames = _frames(3, PRESETS["tiny"].keyframe_size)
    for question, options in QUESTIONS:
        for system in (True, False):
            messages = build_messages(frames, question, options)[0 if system else 1 :]
            text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert ours.apply_chat_template(messages, add_generation_prompt=True) == text
            assert text.count("<|image_pad|>") == 3 and ("helpful assistant" in text) is not system
            ref = hf(text=[text], images=[f.image for f in frames], return_tensors="np")["input_ids"][0]
            assert ours.prompt_ids(messages, 12) == [int(x) for x in ref]


def test_template_in_tokenizer_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    shutil.copytree(tiny_model_dir, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": template}, {"name": "x", "template": "no"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    messages = build_messages(_frames(1, (112, 84)), "q?")
    expected = Processor.from_dir(tiny_model_dir).apply_chat_template(messages, add_generation_prompt=True)
    assert Processor.from_dir(folder).apply_chat_template(messages, add_generation_prompt=True) == expected


def test_from_transformers_equals_from_dir(tiny_model_dir: Path) -> None:
    hf = AutoProcessor.from_pretrained(str(tiny_model_dir))
    a, b = Processor.of(hf), Processor.from_dir(tiny_model_dir)
    assert Processor.of(b) is b
    assert a.image_processor == b.image_processor
    assert a.chat_template.source == b.chat_template.source
    assert a.tokenizer.encode(TEXTS[1]) == b.tokenizer.encode(TEXTS[1])


def test_template_features_transformers_provides(tiny_model_dir: Path) -> None:
    """raise_exception, tojson without HTML escaping, loop controls, {% generation %}, special
    token variables, trim/lstrip of blocks: a template using them renders as in transformers."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from egovlm.processing import ChatTemplate

    template = (
        "{% for m in messages %}\n"
        "  {% if m['role'] == 'skip' %}{% continue %}{% endif %}\n"
        "  {% generation %}{{ m['content'] | tojson }}{% endgeneration %}|{{ eos_token }}\n"
        "{% endfor %}\n"
        "{% if messages | length > 3 %}{{ raise_exception('too many: ' ~ messages | length) }}{% endif %}"
    )
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "<b>é & 🙂</b>"},
        {"role": "skip", "content": "x"},
        {"role": "assistant", "content": "ok", "name": None},
    ]
    ours = ChatTemplate(template, {"eos_token": "<|im_end|>"}).render(messages)
    ref, _ = render_jinja_template(
        conversations=[messages], chat_template=template, eos_token="<|im_end|>", add_generation_prompt=False
    )
    assert ours == ref[0]
    assert '"<b>é & 🙂</b>"' in ours
    with pytest.raises(TemplateError, match="too many: 4"):
        ChatTemplate(template).render([*messages, {"role": "user", "content": "y"}])


def test_broken_folders_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    def broken(name: str, edit: Any) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_model_dir, folder)
        edit(folder)
        return folder

    with pytest.raises(ProcessorError, match="processor folder not found"):
        Processor.from_dir(tmp_path / "nowhere")
    folder = broken("no-tok", lambda f: (f / "tokenizer.json").unlink())
    with pytest.raises(ProcessorError, match="tokenizer.json: missing"):
        Processor.from_dir(folder)
    folder = broken("no-template", lambda f: (f / "chat_template.jinja").unlink())
    with pytest.raises(ProcessorError, match="no chat template"):
        Processor.from_dir(folder)

    def other_kind(f: Path) -> None:
        config = json.loads((f / "processor_config.json").read_text())
        config["image_processor"]["image_processor_type"] = "CLIPImageProcessor"
        (f / "processor_config.json").write_text(json.dumps(config))

    with pytest.raises(ProcessorError, match="CLIPImageProcessor.*only implements"):
        Processor.from_dir(broken("clip", other_kind))

    def unknown_special(f: Path) -> None:
        config = json.loads((f / "tokenizer_config.json").read_text())
        config["extra_special_tokens"].append("<|not_in_vocab|>")
        (f / "tokenizer_config.json").write_text(json.dumps(config))

    with pytest.raises(ProcessorError, match=r"<\|not_in_vocab\|>"):
        Processor.from_dir(broken("special", unknown_special))
    folder = broken("bad-json", lambda f: (f / "processor_config.json").write_text("{"))
    with pytest.raises(ProcessorError, match="processor_config.json: not valid JSON"):
        Processor.from_dir(folder)
    with pytest.raises(ProcessorError, match="shortest_edge and longest_edge"):
        ImageProcessor.from_config({"size": {"height": 84, "width": 112}})
    with pytest.raises(ProcessorError, match="multiples of patch x merge = 28"):
        ImageProcessor(do_resize=False)(np.zeros((30, 56, 3), dtype=np.uint8))
    with pytest.raises(ProcessorError, match="HxWx3 uint8"):
        ImageProcessor()(np.zeros((28, 28, 3), dtype=np.float32))
