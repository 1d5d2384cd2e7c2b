"""Engine policy with a stand-in backend (no model): citations, questions serialised on the model,
ingest never blocked by a question, rebuild failures reported, profiles wired in."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from egovlm.contract import SYSTEM_PROMPT
from egovlm.edge.backends import (
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
)
from egovlm.edge.buffer import KeyframeBuffer
from egovlm.edge.engine import Engine, EngineError, EngineParams
from egovlm.edge.profile import MemoryBudgetError, load_profile
from tests.edge.edge_fakes import AnsweringBackend, wait_until


class EchoBackend(AnsweringBackend):
    """Answers with a fixed text after ``delay_s``; records overlapping generate calls."""

    name = "echo"

    def __init__(self, text: str, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.text, self.delay_s = text, delay_s
        self.gate = gate  # when set, a generate call holds the model until the event is set
        self.active = 0
        self.max_active = 0
        self.fail_builds = False
        self.encoded: list[int] = []
        self.events: list[str] = []
        self.build_delay_s = 0.0
        self._lock = threading.Lock()

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return (32, 24)

    def encode_keyframe(self, keyframe_id: int, image: Any) -> VisionFeatures:
        assert image.shape == (24, 32, 3)
        self.encoded.append(keyframe_id)
        return VisionFeatures(keyframe_id, 1, (1, 2, 2), None, 0.0)

    def build_prefix(
        self,
        version: int,
        keyframes: Sequence[Any],
        features: Sequence[VisionFeatures],
        system_prompt: str = SYSTEM_PROMPT,
        previous: PrefixState | None = None,
    ) -> PrefixState:
        if self.fail_builds:
            raise RuntimeError("out of memory")
        self.events.append(f"build {len(keyframes)}")
        time.sleep(self.build_delay_s)
        reused = (
            previous.n_tokens if previous is not None and len(previous.keyframe_ids) <= len(keyframes) else 0
        )
        ids = tuple(k.id for k in keyframes)
        return PrefixState(version, ids, system_prompt, len(keyframes), 0.0, None, reused_tokens=reused)

    def _answer(self, n_frames: int, params: GenerationParams, on_text: TokenCallback | None) -> Generation:
        self.events.append("generate")
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay_s)
        if self.gate is not None:
            assert self.gate.wait(30), "the test never released the model"
        if on_text:
            on_text(self.text)
        with self._lock:
            self.active -= 1
        return Generation(self.text, [1, 2, 3], 10, 3, 1.0, 2.0)


def _frame(level: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    rng = np.random.default_rng(level)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return img


ANSWER = "<think>the cup moved</think>\n<keyframes>1, 3, 7</keyframes>\n<answer>B</answer>"


def test_citations_map_to_the_snapshot_keyframes() -> None:
    engine = Engine(EchoBackend(ANSWER), KeyframeBuffer(capacity=4))
    for i in range(3):
        engine.add_keyframe(10.0 * i, _frame(i))
    a = engine.ask("What moved?", {"A": "x", "B": "y"})
    assert a.parsed.answer == "B" and a.parsed.format_ok
    assert [(c.index, c.t) for c in a.cited] == [(1, 0.0), (3, 20.0)]
    assert [c.keyframe_id for c in a.cited] == [a.keyframes[0].id, a.keyframes[2].id]
    assert a.invalid_citations == (7,)
    d = a.to_dict()
    assert d["answer"] == "B" and d["cited"][1]["t"] == 20.0 and d["keyframes"][2]["index"] == 3
    assert d["latency"]["ttft_ms"] >= d["latency"]["prefill_ms"]


def test_questions_are_serialised_and_ingest_is_never_blocked() -> None:
    gate = threading.Event()
    backend = EchoBackend(ANSWER, gate=gate)
    engine = Engine(backend, KeyframeBuffer(capacity=4), EngineParams(debounce_s=0.01))
    with engine:
        engine.add_keyframe(0.0, _frame(0))
        assert engine.wait_until_ready(10)
        askers = [threading.Thread(target=engine.ask, args=("q?",)) for _ in range(3)]
        for t in askers:
            t.start()
        assert wait_until(lambda: backend.active == 1, 10)  # a question now holds the model

        def ingest() -> None:
            for i in range(50):
                engine.add_frame(1.0 + 0.1 * i, _frame(100 + i))

        feeder = threading.Thread(target=ingest)
        feeder.start()
        feeder.join(20)  # a hang guard only: blocked ingest would wait for the gate, forever
        ingested_while_held = not feeder.is_alive() and backend.active == 1
        gate.set()
        for t in askers:
            t.join(10)
        feeder.join(10)
    assert backend.max_active == 1  # never two generate calls at once
    # All 50 frames went in while a question still held the model (and two more waited for it).
    assert ingested_while_held
    status = engine.status()
    assert status.frames_seen == 50 and status.keyframes_selected >= 2


def test_vision_features_are_cached_by_keyframe_id() -> None:
    backend = EchoBackend(ANSWER)
    engine = Engine(backend, KeyframeBuffer(capacity=2))
    for i in range(2):
        engine.add_keyframe(float(i), _frame(i))
    engine.ask("a?")
    engine.refresh()
    engine.add_keyframe(5.0, _frame(9))
    engine.ask("b?")
    assert len(backend.encoded) == len(set(backend.encoded)) == 3


def test_rebuild_failure_is_reported_not_hidden() -> None:
    backend = EchoBackend(ANSWER)
    backend.fail_builds = True
    engine = Engine(backend, KeyframeBuffer(capacity=2), EngineParams(debounce_s=0.01, warm_timeout_s=5))
    with engine:
        engine.add_keyframe(0.0, _frame(0))
        with pytest.raises(EngineError, match="out of memory"):
            engine.ask("anything?")
        assert "out of memory" in (engine.status().last_error or "")
        backend.fail_builds = False  # the next change rebuilds and recovers
        engine.add_keyframe(1.0, _frame(1))
        assert engine.wait_until_ready(10)
        assert engine.ask("anything?").snapshot_version == engine.buffer.version
        assert engine.status().last_error is None


def test_engine_from_profile() -> None:
    profile = load_profile("orin-nx")
    engine = Engine.from_profile(EchoBackend(ANSWER), profile)
    assert engine.buffer.capacity == profile.keyframes.capacity
    assert engine.buffer.horizon_s == profile.keyframes.horizon_s
    assert engine.selector.params == profile.selector
    assert engine.params.generation.max_new_tokens == profile.generation.max_new_tokens
    too_big = profile.model_copy(update={"memory_budget_gb": 2.0})
    with pytest.raises(MemoryBudgetError, match="budget is 2.00 GB"):
        Engine.from_profile(EchoBackend(ANSWER), too_big)


class _ParamsBackend(EchoBackend):
    """Records the decoding settings each question reaches the backend with."""

    def __init__(self) -> None:
        super().__init__(ANSWER)
        self.seen: list[GenerationParams] = []

    def _answer(self, n_frames: int, params: GenerationParams, on_text: TokenCallback | None) -> Generation:
        self.seen.append(params)
        return super()._answer(n_frames, params, on_text)


def test_a_question_decodes_with_the_engine_settings_and_its_own_overrides() -> None:
    """The engine's GenerationParams reach the backend as they are; a question's overrides
    (max_new_tokens, do_sample, seed) replace only those fields."""
    base = GenerationParams(max_new_tokens=32, temperature=0.3, top_p=0.5, seed=7)
    backend = _ParamsBackend()
    engine = Engine(backend, KeyframeBuffer(capacity=4), EngineParams(base))
    engine.add_keyframe(0.0, _frame(1))
    engine.ask("What moved?", use_cache=False)
    engine.ask("What moved?", use_cache=False, max_new_tokens=8, do_sample=True, seed=3)
    assert backend.seen[0] == base
    assert backend.seen[1] == GenerationParams(
        max_new_tokens=8, do_sample=True, temperature=0.3, top_p=0.5, seed=3
    )


@pytest.mark.parametrize(
    "bad", [{"max_new_tokens": 0}, {"temperature": 0.0}, {"top_p": 1.5}, {"num_beams": 2}]
)
def test_generation_params_are_validated_wherever_they_are_made(bad: dict[str, Any]) -> None:
    """One definition with its bounds: the profile's ``generation:`` section, the engine's
    defaults and a question's settings are all GenerationParams, refused out of bounds."""
    with pytest.raises(ValidationError):
        GenerationParams(**bad)
    assert isinstance(load_profile("cpu").generation, GenerationParams)


def test_add_frame_runs_the_selector() -> None:
    engine = Engine(EchoBackend(ANSWER), KeyframeBuffer(capacity=8))
    static = _frame(1)
    decisions = [engine.add_frame(0.1 * i, static) for i in range(30)]  # 3 s of a static view
    assert [d.reason for d in decisions if d.keyframe] == ["first"]
    assert engine.add_frame(3.1, _frame(2)).reason == "novel"
    assert len(engine.buffer) == 2
    with pytest.raises(EngineError, match="empty"):
        engine.ask("   ")


@pytest.mark.parametrize("kind", ["onnx", "tensorrt"])
def test_export_backends_name_a_missing_export(kind: str) -> None:
    from egovlm.edge.backends import BackendError, create_backend

    with pytest.raises(BackendError, match=rf"{kind} backend: export folder not found: /exports/tiny"):
        create_backend(kind, "/exports/tiny")


def test_unknown_backend_is_named() -> None:
    from egovlm.edge.backends import BackendError, create_backend

    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        create_backend("tflite", "/models/x")


class ChunkingEchoBackend(EchoBackend):
    supports_prefix_reuse = True


def test_background_rebuild_steps_aside_for_questions() -> None:
    """The worker prefills in chunks and lets a waiting question have the model between them."""
    backend = ChunkingEchoBackend(ANSWER)
    params = EngineParams(debounce_s=0.01, rebuild_chunk_frames=2)
    engine = Engine(backend, KeyframeBuffer(capacity=12), params)
    with engine:
        engine.add_keyframe(0.0, _frame(0))
        assert engine.wait_until_ready(10)
        backend.build_delay_s = 0.15
        backend.events.clear()
        for i in range(1, 9):  # a burst: one rebuild of 9 keyframes = 5 chunks of 2
            engine.add_keyframe(float(i), _frame(i))
        while "build 2" not in backend.events:
            time.sleep(0.005)
        answer = engine.ask("now?")
        assert engine.wait_until_ready(10)
    builds_before = backend.events[: backend.events.index("generate")]
    assert builds_before and len(builds_before) <= 2  # it waited for at most the running chunk
    assert backend.events[-1] == "build 9"  # the rebuild then finished
    assert len(answer.keyframes) == 1  # partial (chunk) states are never published
