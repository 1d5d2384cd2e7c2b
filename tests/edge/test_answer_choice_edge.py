"""On the device a question with options is answered with one of them (egovlm.choice): the trained
mini model, asked with whole-sentence options, writes words that are no option when free and an
option under the default rule, cached and from scratch alike, in the torch and the ONNX backend; an
open question stays free."""

from __future__ import annotations

from pathlib import Path

import pytest

from egovlm.contract import parse_answer
from egovlm.descriptor import describe
from egovlm.edge.backends import GenerationParams
from egovlm.edge.backends.torch_backend import TorchBackend
from egovlm.edge.buffer import Keyframe, KeyframeBuffer
from egovlm.frames import resize_for_model
from tests.edge.edge_fakes import blocky_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MINI = Path(__file__).resolve().parents[2] / "models" / "egovlm-mini"
QUESTION = "Which statement about the red cup and the blue book is true?"
OPTIONS = {
    "A": "Only the red cup was picked up; the blue book was never picked up.",
    "B": "Only the blue book was picked up; the red cup was never picked up.",
    "C": "Neither the red cup nor the blue book was picked up.",
    "D": "The red cup was picked up before the blue book.",
    "E": "The blue book was picked up before the red cup.",
}


@pytest.fixture(scope="module")
def mini() -> TorchBackend:
    return TorchBackend.load(MINI)


def keyframes(backend: TorchBackend, n: int = 8) -> tuple[Keyframe, ...]:
    buf = KeyframeBuffer(capacity=n)
    for i, img in enumerate(blocky_images(n, 0)):
        buf.add(1.0 + 2.0 * i, resize_for_model(img, backend.keyframe_size), describe(img))
    return buf.snapshot().keyframes


def test_sentence_options_are_answered_with_an_option(mini: TorchBackend) -> None:
    kfs = keyframes(mini)
    state = mini.build_prefix(1, kfs, [mini.encode_keyframe(k.id, k.image) for k in kfs])
    free = mini.generate(state, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64, answers="free"))
    said = parse_answer(free.text, None, OPTIONS)
    assert "<answer>" in free.text and said.answer is None, free.text  # precondition: words, no option
    ruled = mini.generate(state, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64))
    assert parse_answer(ruled.text, None, OPTIONS).answer in OPTIONS, ruled.text
    scratch = mini.generate_from_scratch(kfs, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64))
    assert scratch.token_ids == ruled.token_ids
    sampled = GenerationParams(max_new_tokens=64, do_sample=True, temperature=1.0, top_p=1.0, seed=3)
    assert (
        parse_answer(mini.generate(state, QUESTION, OPTIONS, sampled).text, None, OPTIONS).answer in OPTIONS
    )


def test_open_questions_are_not_restricted(mini: TorchBackend) -> None:
    kfs = keyframes(mini)
    state = mini.build_prefix(1, kfs, [mini.encode_keyframe(k.id, k.image) for k in kfs])
    q = "What did I pick up most recently?"
    ruled = mini.generate(state, q, None, GenerationParams(max_new_tokens=64))
    free = mini.generate(state, q, None, GenerationParams(max_new_tokens=64, answers="free"))
    assert ruled.token_ids == free.token_ids and parse_answer(ruled.text, None).answer


def test_a_profile_names_the_rule() -> None:
    from pydantic import ValidationError

    assert GenerationParams().answers == "options"
    with pytest.raises(ValidationError, match="answers"):
        GenerationParams(answers="letters")  # type: ignore[arg-type]


def test_the_onnx_backend_applies_the_same_rule(
    mini: TorchBackend, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The export's decode loop (ONNX Runtime; TensorRT shares it) restricts numpy logits the same
    way: on an fp32 export of the mini model the free answer is no option, the ruled one is, and it
    is the torch backend's answer token for token."""
    from egovlm.edge.backends.onnx_backend import OnnxBackend
    from tests.exports import quick_export

    onnx = OnnxBackend.load(quick_export(MINI, tmp_path_factory.mktemp("exports") / "mini"), threads=1)
    kfs = keyframes(mini)
    state = onnx.build_prefix(1, kfs, [onnx.encode_keyframe(k.id, k.image) for k in kfs])
    free = onnx.generate(state, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64, answers="free"))
    assert "<answer>" in free.text and parse_answer(free.text, None, OPTIONS).answer is None, free.text
    ruled = onnx.generate(state, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64))
    assert parse_answer(ruled.text, None, OPTIONS).answer in OPTIONS, ruled.text
    torch_state = mini.build_prefix(1, kfs, [mini.encode_keyframe(k.id, k.image) for k in kfs])
    assert (
        ruled.token_ids
        == mini.generate(torch_state, QUESTION, OPTIONS, GenerationParams(max_new_tokens=64)).token_ids
    )
