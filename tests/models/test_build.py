import json
import subprocess
import sys

import pytest

from egovlm.models.build import build_model
from egovlm.models.loading import ModelLoadError, check_model_dir, load_model

# Runs in a fresh interpreter WITHOUT importing egovlm: the saved folder must be plain Hugging Face.
PLAIN_TRANSFORMERS = r"""
import sys, numpy as np
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
d = sys.argv[1]
proc = AutoProcessor.from_pretrained(d, local_files_only=True)
model = AutoModelForImageTextToText.from_pretrained(d, local_files_only=True).eval()
content = []
for i in range(4):
    content += [{"type": "text", "text": f"Frame {i+1} (t={2.0*i:.1f} s): "}, {"type": "image"},
                {"type": "text", "text": "\n"}]
content.append({"type": "text", "text": "Question: What did I pick up?\nOptions:\nA. cup\nB. book"})
msgs = [{"role": "user", "content": content}]
text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
imgs = [Image.fromarray(np.full((84, 112, 3), 40 * i, np.uint8)) for i in range(4)]
inputs = proc(text=[text], images=imgs, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
assert "egovlm" not in sys.modules
print(inputs["image_grid_thw"].shape[0], out.shape[1] - inputs["input_ids"].shape[1])
"""


def test_plain_transformers_generates_for_four_frames(tiny_model_dir):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    images, new_tokens = map(int, res.stdout.split()[-2:])
    assert images == 4 and 1 <= new_tokens <= 8


def test_tiny_is_about_one_million_parameters(tiny_model_dir):
    meta = json.loads((tiny_model_dir / "egovlm.json").read_text())
    assert 0.5e6 < meta["parameters"] < 2e6
    assert meta["keyframe_size"] == [112, 84]


def test_tokenizer_has_qwen_specials_and_answer_tags(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    tok = loaded.tokenizer
    for t in ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<answer>"]:
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1, t
    cfg = loaded.model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert tok.decode(tok.encode("<think>hi</think>")) == "<think>hi</think>"


def test_same_seed_same_weights(tmp_path):
    a = build_model("tiny", tmp_path / "a", seed=3)
    b = build_model("tiny", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_build_refuses_non_empty_folder_and_unknown_size(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_model("tiny", tmp_path / "x")
    assert (tmp_path / "x" / "f").read_text() == "keep me"
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        build_model("huge", tmp_path / "y")


@pytest.mark.parametrize("missing", ["config.json", "tokenizer_config.json", "processor_config.json"])
def test_incomplete_model_dir_names_the_missing_file(tiny_model_dir, tmp_path, missing):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / missing).unlink()
    with pytest.raises(ModelLoadError, match=missing.replace(".", r"\.")):
        check_model_dir(broken)


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickled"):
        load_model(broken)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope")
