"""The edge engine: keyframes in, answers out, with the model's state for the buffer kept warm.

Three threads meet here (docs/architecture.md#threads):

* **ingest** calls :meth:`Engine.add_frame` for every camera frame: descriptor, selector,
  buffer; microseconds to a few milliseconds, never waits for the model;
* the **worker** (started by :meth:`Engine.start`) wakes when the buffer version changes, waits
  ``debounce_s`` for it to settle, encodes the vision features of keyframes it has not seen
  (ONCE per keyframe, cached by keyframe id) and rebuilds the prefix KV state for the new
  snapshot, then swaps (state, snapshot) in atomically;
* **questions** (:meth:`Engine.ask`) are serialised on a lock, take the latest consistent
  (state, snapshot) pair, even mid-rebuild, and pay only for their own tokens plus decoding.
  ``use_cache=False`` re-encodes everything at question time instead (the benchmark baseline).

An :class:`Answer` cites frames by the prompt's 1..N indices; ``Answer.keyframes`` is the
snapshot those indices refer to, so citations stay correct even if the buffer moved on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from egovlm.contract import SYSTEM_PROMPT, ParsedAnswer, parse_answer
from egovlm.descriptor import Descriptor, describe
from egovlm.edge.backends.base import (
    Backend,
    Generation,
    GenerationParams,
    PrefixState,
    TokenCallback,
    VisionFeatures,
)
from egovlm.edge.buffer import BufferSnapshot, Keyframe, KeyframeBuffer
from egovlm.edge.profile import EdgeProfile, ModelDims, check_memory
from egovlm.frames import resize_for_model
from egovlm.keyframes import Decision, KeyframeSelector

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A question cannot be answered (no keyframes yet, the worker failed, timeout)."""


class AnswerTooLongError(ValueError):
    """A question asked for a longer answer than the engine's ``max_new_tokens``: the device profile's
    memory plan (KV cache, TensorRT decode profile) reserves room for that many tokens and no more."""

    @classmethod
    def for_limit(cls, asked: int, limit: int) -> AnswerTooLongError:
        return cls(
            f"max_new_tokens {asked} exceeds this device's limit of {limit} (the device profile's "
            "generation.max_new_tokens, which its memory plan reserves; start the server with a larger "
            "--max-new-tokens if the device has room)"
        )


class _StoppingError(Exception):
    """The engine is stopping: a background rebuild abandons its work."""


@dataclass(frozen=True)
class EngineParams:
    """How the engine runs. ``generation``: the decoding defaults of every question (a device
    profile's ``generation:`` section); its ``max_new_tokens`` is also the longest answer a question
    may ask for (the memory plan reserves that many tokens)."""

    generation: GenerationParams = field(default_factory=GenerationParams)
    debounce_s: float = 0.05  # quiet time before a rebuild, so a burst of changes costs one
    max_debounce_s: float = 0.5  # ... but never postpone a rebuild longer than this
    warm_timeout_s: float = 120.0  # a question before the first prefix exists waits this long
    rebuild_chunk_frames: int = 8  # background prefill granularity: a question waits at most one chunk
    system_prompt: str = SYSTEM_PROMPT
    blur_faces: bool = False  # pixelate faces before a keyframe reaches the model (egovlm.edge.faces)


@dataclass(frozen=True)
class CitedFrame:
    """A frame an answer cites."""

    index: int  # the prompt's 1-based frame index
    keyframe_id: int
    t: float


@dataclass(frozen=True)
class Latency:
    """Where the time went, in milliseconds (tokens per second for decode)."""

    queue_ms: float  # waiting for the model (an earlier question) or for the first prefix
    prepare_ms: float  # prompt rendering, tokenisation, positions (+ image preprocessing from scratch)
    prefill_ms: float  # prefill of the uncached tokens up to the first token
    ttft_ms: float  # ask() called -> first token
    decode_ms: float
    decode_tok_s: float
    total_ms: float
    n_prompt_tokens: int
    n_prefill_tokens: int
    n_new_tokens: int


@dataclass(frozen=True)
class Answer:
    question: str
    options: dict[str, str] | None
    text: str
    parsed: ParsedAnswer
    cited: tuple[CitedFrame, ...]
    invalid_citations: tuple[int, ...]  # cited indices outside 1..N
    keyframes: tuple[Keyframe, ...]  # the snapshot the answer saw; index i is keyframes[i - 1]
    snapshot_version: int
    buffer_version: int  # at question time; larger than snapshot_version when a rebuild was pending
    cached: bool
    latency: Latency
    token_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (images left out)."""
        return {
            "question": self.question,
            "options": self.options,
            "text": self.text,
            "answer": self.parsed.answer,
            "answer_text": self.parsed.answer_text,
            "think": self.parsed.think,
            "format_ok": self.parsed.format_ok,
            "problems": list(self.parsed.problems),
            "cited": [asdict(c) for c in self.cited],
            "invalid_citations": list(self.invalid_citations),
            "keyframes": [{"index": i + 1, "id": k.id, "t": k.t} for i, k in enumerate(self.keyframes)],
            "snapshot_version": self.snapshot_version,
            "buffer_version": self.buffer_version,
            "cached": self.cached,
            "latency": asdict(self.latency),
        }


@dataclass(frozen=True)
class EngineStatus:
    running: bool
    ready: bool  # the prefix state matches the buffer's current version
    buffer_version: int
    state_version: int | None
    keyframes: int
    frames_seen: int
    keyframes_selected: int
    rebuilds: int
    last_build_ms: float
    vision_calls: int
    features_cached: int
    last_error: str | None
    last_reused_tokens: int = 0  # prefix tokens the last rebuild took over instead of recomputing


@dataclass
class _Counters:
    frames_seen: int = 0
    keyframes_selected: int = 0
    rebuilds: int = 0
    last_build_ms: float = 0.0
    last_reused_tokens: int = 0
    vision_calls: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class _Warm:
    """A prefix state with the snapshot it was built from: swapped in as one reference."""

    state: PrefixState
    snapshot: BufferSnapshot


@dataclass
class _Shared:
    warm: _Warm | None = None
    empty_version: int | None = None  # the buffer was seen empty at this version
    counters: _Counters = field(default_factory=_Counters)


class Engine:
    """Keyframe selection + buffer + cached model state + questions. See the module docstring."""

    def __init__(
        self,
        backend: Backend,
        buffer: KeyframeBuffer,
        params: EngineParams | None = None,
        selector: KeyframeSelector | None = None,
    ) -> None:
        self.backend = backend
        self.buffer = buffer
        self.params = params or EngineParams()
        self.selector = selector or KeyframeSelector()
        self._features: dict[int, VisionFeatures] = {}  # keyframe id -> vision output (worker only)
        self._shared = _Shared()
        self._cond = threading.Condition()  # guards _shared; notified on every swap
        self._model_lock = threading.Lock()  # one question at a time
        self._stop = threading.Event()
        self._asking = 0  # questions waiting or running: the worker steps aside (guarded by _cond)
        self._thread: threading.Thread | None = None
        self._forgot_version = -1  # buffer version of the last forget(): older states are discarded
        self._reset_selector = False  # set by forget(); the ingest thread resets its selector

    @classmethod
    def from_profile(cls, backend: Backend, profile: EdgeProfile, check: bool = True) -> Engine:
        """Buffer, selector and parameters from a device profile. With ``check``, refuse a
        profile whose K/precision cannot fit its memory budget, sized with the loaded model's
        own config when the backend exposes one (else the profile's ``model_family``)."""
        if check:
            config = getattr(backend, "config", None)
            check_memory(profile, ModelDims.from_config(config) if config is not None else None)
        e = profile.engine
        params = EngineParams(
            generation=profile.generation,
            debounce_s=e.debounce_s,
            max_debounce_s=e.max_debounce_s,
            blur_faces=profile.faces.blur_model_input,
        )
        buffer = KeyframeBuffer(profile.keyframes.capacity, profile.keyframes.horizon_s)
        return cls(backend, buffer, params, KeyframeSelector(profile.selector))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Engine:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._worker, name="egovlm-prefix", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the worker (it leaves a rebuild at its next keyframe encoding or prefill chunk) and
        wait, ``timeout`` seconds in all, for it and for the questions in flight to leave the model
        (a question ends when its caller cancels it, as :class:`egovlm.edge.runtime.EdgeRuntime`
        does, or when it is answered; questions waiting for a first prefix state are refused).
        Returns True when no thread is inside the backend any more. A process must not exit while
        one is: the interpreter ends daemon threads at exit by unwinding them from where they
        stand, and inside torch's C++ code that unwinding calls std::terminate (SIGABRT)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.buffer.wake()  # out of wait_for_change
        with self._cond:  # out of _yield_to_questions and _wait_warm
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("the prefix worker is still inside the model after %.1f s", timeout)
                return False
            self._thread = None
        with self._cond:
            if not self._cond.wait_for(lambda: self._asking == 0, max(0.0, deadline - time.monotonic())):
                log.warning("%d question(s) still inside the model after %.1f s", self._asking, timeout)
                return False
        return True

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ingest --------------------------------------------------------------------------------

    def add_frame(self, t: float, rgb: np.ndarray) -> Decision:
        """Offer one camera frame (HxWx3 uint8 RGB at any size). Cheap; never waits for the model."""
        if self._reset_selector:  # forget(): the selector's memory of past frames goes too
            self._reset_selector = False
            self.selector.reset()
        descriptor = describe(rgb)
        decision = self.selector.offer(t, descriptor=descriptor, bank=self.buffer.thumbs())
        with self._cond:
            self._shared.counters.frames_seen += 1
        if decision.keyframe:
            self._insert(t, rgb, decision.reason, descriptor)
        else:
            self.buffer.expire(t)
        return decision

    def add_keyframe(self, t: float, rgb: np.ndarray, reason: str = "manual") -> Keyframe | None:
        """Insert a frame as a keyframe, bypassing the selector (file sources, tests)."""
        return self._insert(t, rgb, reason)

    def _insert(
        self, t: float, rgb: np.ndarray, reason: str, descriptor: Descriptor | None = None
    ) -> Keyframe | None:
        image = resize_for_model(rgb, self.backend.keyframe_size)
        if self.params.blur_faces:  # the buffer, its thumbnails and the model only ever see the blurred frame
            from egovlm.edge.faces import blur_faces

            image = blur_faces(image)
        kf = self.buffer.add(t, image, descriptor or describe(rgb), reason)
        with self._cond:
            self._shared.counters.keyframes_selected += kf is not None
        return kf

    def forget(self) -> int:
        """Forget everything seen: the buffer's keyframes, the cached vision features, the model's
        prefix state and the selector's memory of recent frames (reset by the ingest thread before
        its next frame: the selector is not thread-safe). A rebuild already running for an older
        buffer version finishes but is discarded (:meth:`refresh`). Returns the buffer's new version.
        Answers already handed out keep the frames they cite; nothing here can reach them."""
        with self._cond:
            version = self.buffer.clear()
            self._forgot_version = version
            self._features = {}
            self._shared.warm = None
            self._shared.empty_version = version
            self._reset_selector = True
            self._cond.notify_all()
        log.info("forgot every keyframe, vision feature and model state (buffer v%d)", version)
        return version

    # -- background state ----------------------------------------------------------------------

    def _worker(self) -> None:
        seen = -1
        while not self._stop.is_set():
            version = self.buffer.wait_for_change(seen, timeout=0.2)
            if self._stop.is_set():
                break
            if version == seen:
                continue
            version = self._settle(version)
            snapshot = self.buffer.snapshot()
            try:
                self.refresh(snapshot, background=True)
            except _StoppingError:
                break
            except Exception as e:  # keep serving the last good state; report the failure
                log.exception("prefix rebuild failed for buffer version %d", snapshot.version)
                with self._cond:
                    self._shared.counters.last_error = f"{type(e).__name__}: {e}"
                    self._cond.notify_all()
            seen = snapshot.version

    def _settle(self, version: int) -> int:
        """Debounce: wait until the buffer has been quiet for ``debounce_s`` (bounded)."""
        deadline = time.monotonic() + self.params.max_debounce_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            later = self.buffer.wait_for_change(version, timeout=self.params.debounce_s)
            if later == version:
                break
            version = later
        return version

    def refresh(self, snapshot: BufferSnapshot | None = None, background: bool = False) -> PrefixState | None:
        """Bring the cached state up to ``snapshot`` (default: the buffer now). The worker calls
        this with ``background=True``: it then steps aside whenever a question is waiting (between
        keyframe encodings and between prefill chunks), so questions never share the compute with
        a rebuild. Call it directly only when the worker is not running (tests, benchmarks)."""
        snapshot = snapshot or self.buffer.snapshot()
        if not snapshot.keyframes:
            with self._cond:
                self._shared.warm = None
                self._shared.empty_version = snapshot.version
                self._cond.notify_all()
            return None
        t0 = time.perf_counter()
        features = []
        for kf in snapshot.keyframes:
            if background:
                self._yield_to_questions()
            features.append(self._features_for(kf))
        live = set(snapshot.ids)
        for kid in [k for k in self._features if k not in live]:
            self._features.pop(kid, None)
        state, reused = self._build(snapshot, features, background)
        with self._cond:
            if snapshot.version < self._forgot_version:  # built from frames forget() dropped
                for kid in snapshot.ids:
                    self._features.pop(kid, None)
                return None
            self._shared.warm = _Warm(state, snapshot)
            self._shared.empty_version = None
            c = self._shared.counters
            c.rebuilds += 1
            c.last_build_ms = (time.perf_counter() - t0) * 1000
            c.last_reused_tokens = reused
            c.last_error = None
            self._cond.notify_all()
        return state

    def _build(
        self, snapshot: BufferSnapshot, features: list[VisionFeatures], background: bool
    ) -> tuple[PrefixState, int]:
        """The prefix state for the snapshot, and how many of its tokens were not recomputed.

        With a backend that reuses prefix KV, the prefill runs in chunks of
        ``rebuild_chunk_frames`` keyframes, each continuing from the last (exact: attention is
        causal), so a waiting question gets the model between chunks."""
        kfs, prompt = snapshot.keyframes, self.params.system_prompt
        if not self.backend.supports_prefix_reuse:
            return self.backend.build_prefix(snapshot.version, kfs, features, prompt), 0
        with self._cond:
            state = self._shared.warm.state if self._shared.warm is not None else None
        step = self.params.rebuild_chunk_frames if background else len(kfs)
        computed = 0
        for end in [*range(step, len(kfs), step), len(kfs)]:
            if background:
                self._yield_to_questions()
            state = self.backend.build_prefix(
                snapshot.version, kfs[:end], features[:end], prompt, previous=state
            )
            computed += state.n_tokens - state.reused_tokens
        assert state is not None
        return state, state.n_tokens - computed

    def _yield_to_questions(self) -> None:
        """Wait while questions are queued or running, unless they are waiting for us (no state
        exists yet to answer from)."""
        with self._cond:
            self._cond.wait_for(lambda: self._asking == 0 or self._shared.warm is None or self._stop.is_set())
        if self._stop.is_set():
            raise _StoppingError

    def _features_for(self, kf: Keyframe) -> VisionFeatures:
        feats = self._features.get(kf.id)
        if feats is None:
            feats = self.backend.encode_keyframe(kf.id, kf.image)
            self._features[kf.id] = feats
            with self._cond:
                self._shared.counters.vision_calls += 1
        return feats

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until the cached state matches the buffer's current version."""
        with self._cond:
            return self._cond.wait_for(self._is_ready, timeout)

    def _is_ready(self) -> bool:
        v = self.buffer.version
        warm = self._shared.warm
        return (warm is not None and warm.snapshot.version == v) or self._shared.empty_version == v

    def status(self) -> EngineStatus:
        with self._cond:
            warm, c = self._shared.warm, self._shared.counters
            return EngineStatus(
                running=self._thread is not None and self._thread.is_alive(),
                ready=self._is_ready(),
                buffer_version=self.buffer.version,
                state_version=warm.snapshot.version if warm else None,
                keyframes=len(self.buffer),
                frames_seen=c.frames_seen,
                keyframes_selected=c.keyframes_selected,
                rebuilds=c.rebuilds,
                last_build_ms=c.last_build_ms,
                vision_calls=c.vision_calls,
                features_cached=len(self._features),
                last_error=c.last_error,
                last_reused_tokens=c.last_reused_tokens,
            )

    # -- questions -----------------------------------------------------------------------------

    def ask(
        self,
        question: str,
        options: Mapping[str, str] | None = None,
        *,
        max_new_tokens: int | None = None,
        on_text: TokenCallback | None = None,
        use_cache: bool = True,
        do_sample: bool | None = None,
        seed: int | None = None,
    ) -> Answer:
        """Answer about the keyframes held now. ``on_text`` streams the answer as it decodes;
        ``max_new_tokens`` (at most the engine's), ``do_sample`` and ``seed`` override the engine's
        :class:`GenerationParams` for this question."""
        if not question.strip():
            raise EngineError("empty question")
        t0 = time.perf_counter()
        g = self.params.generation
        if max_new_tokens is not None and max_new_tokens > g.max_new_tokens:
            raise AnswerTooLongError.for_limit(max_new_tokens, g.max_new_tokens)
        gen = replace(
            g,
            max_new_tokens=max_new_tokens or g.max_new_tokens,
            do_sample=g.do_sample if do_sample is None else do_sample,
            seed=g.seed if seed is None else seed,
        )
        buffer_version = self.buffer.version
        with self._cond:
            self._asking += 1
        try:
            return self._ask_locked(question, options, gen, on_text, use_cache, buffer_version, t0)
        finally:
            with self._cond:
                self._asking -= 1
                self._cond.notify_all()

    def _ask_locked(
        self,
        question: str,
        options: Mapping[str, str] | None,
        gen: GenerationParams,
        on_text: TokenCallback | None,
        use_cache: bool,
        buffer_version: int,
        t0: float,
    ) -> Answer:
        p = self.params
        with self._model_lock:
            if use_cache:
                warm = self._wait_warm()
                snapshot = warm.snapshot
                t_ready = time.perf_counter()
                out = self.backend.generate(warm.state, question, options, gen, on_text)
            else:
                snapshot = self.buffer.snapshot()
                if not snapshot.keyframes:
                    raise EngineError("no keyframes yet: the buffer is empty")
                t_ready = time.perf_counter()
                out = self.backend.generate_from_scratch(
                    snapshot.keyframes, question, options, gen, on_text, p.system_prompt
                )
        return self._answer(question, options, out, snapshot, buffer_version, use_cache, t0, t_ready)

    def _wait_warm(self) -> _Warm:
        if not self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
            # No worker (a script, a test): bring the state up to date on the caller's thread. Not
            # once stop() was called: a stopping engine starts no model work of its own.
            with self._cond:
                stale = not self._is_ready()
            if stale:
                self.refresh()
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    self._shared.warm is not None
                    or self._shared.empty_version == self.buffer.version
                    or self._shared.counters.last_error is not None
                    or self._stop.is_set()
                ),
                self.params.warm_timeout_s,
            )
            warm = self._shared.warm
            if warm is not None:
                return warm
            if self._stop.is_set():
                raise EngineError("the engine is stopping")
            if self._shared.counters.last_error is not None:
                raise EngineError(
                    f"no model state: the last rebuild failed ({self._shared.counters.last_error})"
                )
            if not ok:
                raise EngineError(f"no model state after {self.params.warm_timeout_s:.0f} s")
            raise EngineError("no keyframes yet: the buffer is empty")

    def _answer(
        self,
        question: str,
        options: Mapping[str, str] | None,
        out: Generation,
        snapshot: BufferSnapshot,
        buffer_version: int,
        cached: bool,
        t0: float,
        t_ready: float,
    ) -> Answer:
        total = (time.perf_counter() - t0) * 1000
        queue = (t_ready - t0) * 1000
        parsed = parse_answer(out.text, "".join(options) if options else None, options)
        n = len(snapshot.keyframes)
        cited = tuple(
            CitedFrame(i, snapshot.keyframes[i - 1].id, snapshot.keyframes[i - 1].t)
            for i in parsed.keyframes or []
            if 1 <= i <= n
        )
        invalid = tuple(i for i in parsed.keyframes or [] if not 1 <= i <= n)
        latency = Latency(
            queue_ms=queue,
            prepare_ms=out.prepare_ms,
            prefill_ms=out.prefill_ms,
            ttft_ms=queue + out.prepare_ms + out.prefill_ms,
            decode_ms=out.decode_ms,
            decode_tok_s=out.decode_tok_s,
            total_ms=total,
            n_prompt_tokens=out.n_prompt_tokens,
            n_prefill_tokens=out.n_prefill_tokens,
            n_new_tokens=out.n_new_tokens,
        )
        return Answer(
            question=question,
            options=dict(options) if options else None,
            text=out.text,
            parsed=parsed,
            cited=cited,
            invalid_citations=invalid,
            keyframes=snapshot.keyframes,
            snapshot_version=snapshot.version,
            buffer_version=buffer_version,
            cached=cached,
            latency=latency,
            token_ids=tuple(out.token_ids),
        )
