"""The cached model state (docs/architecture.md#engine-and-backends): cached answers equal from-scratch
ones token for token, vision runs once per keyframe, a question mid-rebuild sees a consistent
snapshot, ingest never waits for the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from egovlm.contract import SYSTEM_PROMPT, build_messages
from egovlm.descriptor import describe
from egovlm.edge.backends import GenerationParams, PrefixState, VisionFeatures
from egovlm.edge.backends.prompt import (
    PromptBoundaryError,
    PromptText,
    render_prompt,
    split_ids,
)
from egovlm.edge.backends.torch_backend import TorchBackend
from egovlm.edge.buffer import Keyframe, KeyframeBuffer
from egovlm.edge.engine import Engine, EngineError, EngineParams
from egovlm.frames import Frame, resize_for_model
from tests.edge.edge_fakes import OPTIONS, QUESTIONS, blocky_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> TorchBackend:
    return TorchBackend.load(tiny_model_dir)


@pytest.fixture(scope="module")
def small(small_model_dir: Path) -> TorchBackend:
    return TorchBackend.load(small_model_dir)


def _keyframes(backend: TorchBackend, n: int, seed: int = 0) -> tuple[Keyframe, ...]:
    buf = KeyframeBuffer(capacity=n)
    for i, img in enumerate(blocky_images(n, seed)):
        buf.add(1.0 + 2.5 * i, resize_for_model(img, backend.keyframe_size), describe(img))
    snap = buf.snapshot()
    assert len(snap) == n
    return snap.keyframes


def _state(backend: TorchBackend, kfs: Sequence[Keyframe], version: int = 1) -> PrefixState:
    feats = [backend.encode_keyframe(k.id, k.image) for k in kfs]
    return backend.build_prefix(version, kfs, feats)


def _plain_transformers(
    backend: TorchBackend, kfs: Sequence[Keyframe], q: str, opts: Mapping[str, str] | None, n: int, **kw: Any
) -> tuple[Any, Any]:
    """The reference: what a plain transformers script does with the same frames and question."""
    frames = [Frame(i + 1, k.t, k.image) for i, k in enumerate(kfs)]
    text = backend.processor.apply_chat_template(
        build_messages(frames, q, opts), add_generation_prompt=True, tokenize=False
    )
    inputs = backend.processor(text=[text], images=[f.pil() for f in frames], return_tensors="pt")
    with torch.no_grad():
        out = backend.model.generate(
            **inputs,
            max_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            return_dict_in_generate=True,
            output_logits=True,
            **kw,
        )
    return inputs, out


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_cached_greedy_equals_from_scratch_generate(which: str, request: pytest.FixtureRequest) -> None:
    backend: TorchBackend = request.getfixturevalue(which)
    kfs = _keyframes(backend, 3)
    state = _state(backend, kfs)
    for q, opts in QUESTIONS:
        inputs, ref = _plain_transformers(backend, kfs, q, opts, 12)
        n_prompt = inputs["input_ids"].shape[1]
        # The cache was built from the processor's own token ids (image pads expanded alike).
        assert state.data.input_ids[0].tolist() == inputs["input_ids"][0, : state.n_tokens].tolist()

        got = backend.generate(state, q, opts, GenerationParams(max_new_tokens=12, return_scores=True))
        assert got.token_ids == ref.sequences[0, n_prompt:].tolist()
        assert got.n_prompt_tokens == n_prompt
        assert got.n_prefill_tokens == n_prompt - state.n_tokens  # only the question was computed
        assert got.scores is not None and len(got.scores) == len(ref.logits)
        for mine, theirs in zip(got.scores, ref.logits, strict=True):
            torch.testing.assert_close(mine, theirs[0].float(), atol=2e-4, rtol=1e-4)


def test_score_comparison_detects_wrong_positions(tiny: TorchBackend) -> None:
    """Negative control: without mm_token_type_ids, positions fall back to 1-D
    (docs/architecture.md#dependency-facts) and the logits move by more than 10x the tolerance used
    above, so that comparison has teeth."""
    kfs = _keyframes(tiny, 3)
    q, opts = QUESTIONS[0]
    inputs, ref = _plain_transformers(tiny, kfs, q, opts, 1)
    bad = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        wrong = tiny.model.generate(
            **bad, max_new_tokens=1, do_sample=False, return_dict_in_generate=True, output_logits=True
        )
    assert (wrong.logits[0] - ref.logits[0]).abs().max().item() > 10 * 2e-4


def test_engine_cached_and_scratch_answers_agree(tiny: TorchBackend) -> None:
    engine = Engine(tiny, KeyframeBuffer(capacity=4), EngineParams(GenerationParams(max_new_tokens=16)))
    for i, img in enumerate(blocky_images(4, seed=3)):
        engine.add_keyframe(2.0 * i, img)
    pieces: list[str] = []
    cached = engine.ask(*QUESTIONS[0], on_text=pieces.append)
    scratch = engine.ask(*QUESTIONS[0], use_cache=False)
    assert cached.cached and not scratch.cached
    assert cached.token_ids == scratch.token_ids
    assert "".join(pieces) == cached.text  # streaming delivers exactly the answer
    assert cached.latency.n_prefill_tokens < scratch.latency.n_prefill_tokens
    assert cached.snapshot_version == scratch.snapshot_version == engine.buffer.version
    assert [k.id for k in cached.keyframes] == [k.id for k in engine.buffer.snapshot().keyframes]


def test_prefix_cache_is_never_written_by_questions(tiny: TorchBackend) -> None:
    kfs = _keyframes(tiny, 2)
    state = _state(tiny, kfs)
    before = [(k.clone(), v.clone(), k.data_ptr()) for k, v in state.data.kv]
    first = tiny.generate(state, "What is on the table?", None, GenerationParams(max_new_tokens=12))
    second = tiny.generate(state, "What is on the table?", None, GenerationParams(max_new_tokens=12))
    assert first.token_ids == second.token_ids
    for (k0, v0, ptr), (k1, v1) in zip(before, state.data.kv, strict=True):
        assert k1.data_ptr() == ptr
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_vision_encoder_runs_once_per_keyframe(tiny: TorchBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    inner = tiny.model.model.get_image_features

    def counting(pixel_values: Any, image_grid_thw: Any = None, **kw: Any) -> Any:
        calls.append(int(image_grid_thw.shape[0]))
        return inner(pixel_values, image_grid_thw, **kw)

    monkeypatch.setattr(tiny.model.model, "get_image_features", counting)
    engine = Engine(tiny, KeyframeBuffer(capacity=3), EngineParams(GenerationParams(max_new_tokens=4)))
    images = blocky_images(5, seed=7)
    for i in range(3):
        engine.add_keyframe(float(i), images[i])
    engine.ask("What now?")
    engine.refresh()  # a rebuild of the same snapshot re-encodes nothing
    engine.ask("And now?")
    assert len(calls) == 3 and all(n == 1 for n in calls)
    engine.add_keyframe(10.0, images[3])  # capacity 3: one keyframe is evicted
    engine.ask("What changed?")
    assert len(calls) == 4
    status = engine.status()
    assert status.vision_calls == 4 and status.features_cached == 3 and status.rebuilds == 3
    engine.ask("What changed?", use_cache=False)  # the baseline re-encodes all three frames
    assert calls[-1] == 3 and len(calls) == 5


class _GatedBackend(TorchBackend):
    """A torch backend whose prefix rebuild can be held open, to ask questions mid-rebuild."""

    def __init__(self, inner: TorchBackend) -> None:
        super().__init__(inner.loaded)
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def build_prefix(
        self,
        version: int,
        keyframes: Sequence[Any],
        features: Sequence[VisionFeatures],
        system_prompt: str = SYSTEM_PROMPT,
        previous: PrefixState | None = None,
    ) -> PrefixState:
        if self.hold.is_set():
            self.entered.set()
            assert self.release.wait(60), "test never released the rebuild"
        return super().build_prefix(version, keyframes, features, system_prompt, previous)


def test_question_mid_rebuild_uses_last_consistent_snapshot(tiny: TorchBackend) -> None:
    backend = _GatedBackend(tiny)
    engine = Engine(
        backend, KeyframeBuffer(capacity=8), EngineParams(GenerationParams(max_new_tokens=8), debounce_s=0.01)
    )
    images = blocky_images(3, seed=11)
    with engine:
        engine.add_keyframe(1.0, images[0])
        engine.add_keyframe(3.0, images[1])
        assert engine.wait_until_ready(60)
        old = engine.buffer.snapshot()

        backend.hold.set()
        engine.add_keyframe(5.0, images[2])
        assert backend.entered.wait(30), "the worker did not start a rebuild"
        new_version = engine.buffer.version

        # Ingest keeps flowing while the model state is being rebuilt.
        t0 = time.perf_counter()
        for i in range(20):
            engine.add_frame(6.0 + 0.1 * i, images[i % 3])
        assert time.perf_counter() - t0 < 2.0

        result: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: result.setdefault("a", engine.ask("What did I do?")))
        asker.start()
        asker.join(60)
        assert not asker.is_alive(), "a question waited for the rebuild"
        answer = result["a"]
        assert answer.snapshot_version == old.version < answer.buffer_version
        assert [k.id for k in answer.keyframes] == list(old.ids)
        ref = backend.generate_from_scratch(
            old.keyframes, "What did I do?", None, GenerationParams(max_new_tokens=8)
        )
        assert list(answer.token_ids) == ref.token_ids  # the prefix belonged to that snapshot

        backend.hold.clear()
        backend.release.set()
        assert engine.wait_until_ready(60)
        later = engine.ask("What did I do?")
        now = engine.buffer.snapshot()
        assert later.snapshot_version == now.version >= new_version
        assert [k.id for k in later.keyframes] == list(now.ids) and len(now) >= 3


def test_prompt_split_is_question_independent_and_boundary_checked(tiny: TorchBackend) -> None:
    frames = [Frame(i + 1, 2.0 * i, img) for i, img in enumerate(blocky_images(2))]
    a = render_prompt(tiny.processor.apply_chat_template, frames, "What?", OPTIONS, "sys")
    b = render_prompt(tiny.processor.apply_chat_template, frames, "Where is it?", None, "sys")
    assert a.prefix == b.prefix and a.prefix.endswith("<|vision_end|>\n")
    assert a.suffix.startswith("Question: What?")
    split_ids(tiny.tokenizer, a)  # consistent: no error
    with pytest.raises(PromptBoundaryError, match="tokenisation differs"):
        split_ids(tiny.tokenizer, PromptText(prefix="Frame 1: ", suffix="cup"))


def test_ask_without_keyframes_is_a_clear_error(tiny: TorchBackend) -> None:
    engine = Engine(tiny, KeyframeBuffer(capacity=2))
    with pytest.raises(EngineError, match="no keyframes"):
        engine.ask("Anything?")
    with pytest.raises(EngineError, match="no keyframes"):
        engine.ask("Anything?", use_cache=False)


def test_rebuild_reuses_the_kv_of_shared_leading_keyframes(tiny: TorchBackend) -> None:
    """Appending a keyframe prefills only its tokens; evicting one recomputes only what follows
    it; the result equals a full rebuild and still answers exactly like a plain generate."""
    kfs = _keyframes(tiny, 5, seed=21)
    feats = {k.id: tiny.encode_keyframe(k.id, k.image) for k in kfs}

    def build(version: int, chosen: Sequence[Keyframe], previous: PrefixState | None) -> PrefixState:
        return tiny.build_prefix(version, chosen, [feats[k.id] for k in chosen], previous=previous)

    s1 = build(1, kfs[:3], None)
    s1_keys = s1.data.kv[0][0].clone()
    s2 = build(2, kfs[:4], s1)  # append
    assert s2.reused_tokens == s1.n_tokens
    middle = [kfs[0], kfs[1], kfs[3], kfs[4]]  # frame 3 evicted for redundancy
    s3 = build(3, middle, s2)
    per_frame = s2.n_tokens - s1.n_tokens  # label + image tokens of one frame
    assert s3.reused_tokens == s1.n_tokens - per_frame  # system + frames 1-2
    s4 = build(4, middle[1:], s3)  # the oldest aged out: positions shift, nothing reusable
    assert s4.reused_tokens == 0
    s5 = build(5, middle[1:], s4)  # same frames: everything reused, nothing computed
    assert s5.reused_tokens == s5.n_tokens and s5.data.kv[0][0].data_ptr() == s4.data.kv[0][0].data_ptr()
    assert torch.equal(s1.data.kv[0][0], s1_keys)  # the previous state is left intact

    for state, chosen in ((s2, kfs[:4]), (s3, middle)):
        full = build(9, chosen, None)
        for (k1, v1), (k2, v2) in zip(state.data.kv, full.data.kv, strict=True):
            torch.testing.assert_close(k1, k2, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
        q, opts = QUESTIONS[0]
        inputs, ref = _plain_transformers(tiny, chosen, q, opts, 12)
        got = tiny.generate(state, q, opts, GenerationParams(max_new_tokens=12))
        assert got.token_ids == ref.sequences[0, inputs["input_ids"].shape[1] :].tolist()


def test_chunked_background_rebuild_is_exact(tiny: TorchBackend) -> None:
    params = EngineParams(GenerationParams(max_new_tokens=10), debounce_s=0.01, rebuild_chunk_frames=2)
    engine = Engine(tiny, KeyframeBuffer(capacity=8), params)
    with engine:
        for i, img in enumerate(blocky_images(5, seed=31)):
            engine.add_keyframe(1.5 * i, img)
        assert engine.wait_until_ready(60)
        cached = engine.ask(*QUESTIONS[0])
    assert len(cached.keyframes) == 5 and engine.status().rebuilds >= 1
    inputs, ref = _plain_transformers(tiny, cached.keyframes, *QUESTIONS[0], 10)
    assert list(cached.token_ids) == ref.sequences[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize(
    ("said", "options", "answer", "answer_text"),
    [
        ("the yellow banana", None, "the yellow banana", "the yellow banana"),  # open: the words
        ("the yellow banana", {"A": "the red cup", "B": "the yellow banana"}, "B", "the yellow banana"),
        ("A", {"A": "the red cup", "B": "the yellow banana"}, "A", "A"),
    ],
)
def test_open_and_option_text_answers_reach_the_api_and_the_demo(
    said: str, options: dict[str, str] | None, answer: str, answer_text: str
) -> None:
    """The engine parses with the question's options: an open answer's words, an option's text read as
    its letter; both reach the API view (answer_response) and the demo's right/wrong line."""
    from egovlm.edge.demo import demo_questions, verdict
    from egovlm.edge.server import answer_response
    from tests.edge.edge_fakes import ScriptedBackend

    engine = Engine(ScriptedBackend(letter=said), KeyframeBuffer(capacity=4), EngineParams())
    for i, img in enumerate(blocky_images(3, seed=5)):
        engine.add_keyframe(2.0 * i, img)
    a = engine.ask("What did I pick up most recently?", options)
    assert a.parsed.format_ok and a.parsed.answer == answer and a.parsed.answer_text == answer_text
    assert a.to_dict()["answer"] == answer and a.to_dict()["answer_text"] == answer_text
    assert answer_response(a, "r1", "", 64).answer == answer
    truth = "the yellow banana" if options is None else "B"
    assert verdict(a.parsed.answer, truth, options).endswith("(right)" if answer != "A" else "(wrong)")

    class Pick:
        action, object = "pick_up", "yellow banana"

    (q1, mc, letter), (q2, none, words) = demo_questions([Pick()])
    assert q1 == q2 and mc is not None and mc[letter or ""] == "yellow banana"
    assert none is None and words == "the yellow banana"
    assert demo_questions([]) == [(q1, None, None)]
