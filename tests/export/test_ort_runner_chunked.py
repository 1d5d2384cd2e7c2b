"""Chunked prefill (VLMRunner.extend with ``max_chunk``) is the unchunked prefill: the same logits, KV
and greedy tokens on real exports, for chunks of 1 token, 7 tokens (chunks that end inside an image's
token run) and longer than the prompt; from an empty state, after a cached prefix, and from a state cut
from a longer one. And the runtime holds the KV states egovlm.export.fit counts, no more."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from egovlm.contract import build_messages
from egovlm.export import fit
from egovlm.export.ort_runner import KVState, VLMRunner, manifest_max_chunk
from egovlm.export.prompts import generated_prompts
from tests.exports import quick_export

CHUNKS = (1, 7, 10_000)


@pytest.fixture(scope="module")
def tiny_export(tiny_fp32_export: Path) -> Path:
    return tiny_fp32_export


def _prompt(runner: VLMRunner, frames: int = 3) -> tuple[np.ndarray, list[np.ndarray]]:
    prompt = generated_prompts(1, runner.dims.keyframe_size, frames_per_prompt=frames, seed=7)[0]
    ids = runner.prompt_ids(build_messages(prompt.frames, prompt.question, prompt.options))
    return ids, [runner.encode_keyframe(f.image) for f in prompt.frames]


def _chunked(runner: VLMRunner, chunk: int | None) -> VLMRunner:
    return VLMRunner(runner.backend, runner.dims, runner.processor, max_chunk=chunk)


def _assert_same_state(a: KVState, b: KVState) -> None:
    assert a.length == b.length and a.next_position == b.next_position
    assert a.logits is not None and b.logits is not None
    assert float(np.max(np.abs(a.logits - b.logits))) < 1e-5
    for x, y in zip(a.past, b.past, strict=True):
        assert x.shape == y.shape
        assert float(np.max(np.abs(x - y))) < 1e-5


def _check_equal_to_unchunked(export: Path) -> None:
    whole = VLMRunner.from_export(export, threads=1)
    assert whole.max_chunk is None  # an ONNX Runtime export has no TensorRT plan: no chunking
    ids, visual = _prompt(whole)
    reference = whole.extend(whole.empty_state(), ids, visual)
    ref_tokens, _, _ = whole.greedy(reference, 12)
    last_image = int(np.flatnonzero(ids == whole.dims.image_token_id)[-1]) + 1
    for chunk in CHUNKS:
        runner = _chunked(whole, chunk)
        calls: list[int] = []
        decoder = runner.backend.decoder

        def counted(feeds: dict[str, Any], decoder: Any = decoder, calls: list[int] = calls) -> Any:
            calls.append(int(feeds["inputs_embeds"].shape[1]))
            return decoder(feeds)

        runner.backend.decoder = counted
        try:
            state = runner.extend(runner.empty_state(), ids, visual)
            assert calls == fit.chunk_sizes(ids.size, chunk) and max(calls) <= chunk
            _assert_same_state(state, reference)
            tokens, _, _ = runner.greedy(state, 12)
            assert tokens == ref_tokens and len(tokens) > 1
            # Cached prefix, then the question: chunked on both sides of the cut.
            prefix = runner.extend(runner.empty_state(), ids[:last_image], visual)
            _assert_same_state(runner.extend(prefix, ids[last_image:]), reference)
        finally:
            del runner.backend.decoder


def test_chunked_prefill_equals_the_unchunked_one(tiny_export: Path) -> None:
    _check_equal_to_unchunked(tiny_export)


@pytest.mark.slow
def test_chunked_prefill_equals_the_unchunked_one_on_the_small_model(
    small_model_dir: Path, tmp_path: Path
) -> None:
    _check_equal_to_unchunked(quick_export(small_model_dir, tmp_path / "small", max_new_tokens=4))


def test_a_cut_state_is_copied_for_its_first_call_only(tiny_export: Path) -> None:
    """A state cut from a longer one (the leading keyframes a rebuild reuses) shares the old buffers;
    the first decoder call gets a dense copy of the leading positions, later ones the new state."""
    runner = _chunked(VLMRunner.from_export(tiny_export, threads=1), 7)
    ids, visual = _prompt(runner)
    cut_at = int(np.flatnonzero(ids == runner.dims.image_token_id)[runner.dims.tokens_per_keyframe - 1]) + 1
    head = runner.extend(runner.empty_state(), ids[:cut_at], visual[:1])
    full = runner.extend(head, ids[cut_at:], visual[1:])
    cut = full.cut(head.length, head.next_position)
    assert cut.past is full.past and cut.logits is None  # no copy made by cutting
    pasts: list[int] = []
    decoder = runner.backend.decoder

    def seen(feeds: dict[str, Any]) -> Any:
        pasts.append(int(feeds["past_key.0"].shape[2]))
        assert feeds["past_key.0"].flags["C_CONTIGUOUS"]
        return decoder(feeds)

    runner.backend.decoder = seen
    again = runner.extend(cut, ids[cut_at:], visual[1:])
    _assert_same_state(again, full)
    assert pasts[0] == head.length and full.past[0].shape[2] == full.length  # the old state is intact
    dense = cut.dense()
    assert dense.length == head.length and all(p.shape[2] == head.length for p in dense.past)
    assert full.dense() is full
    with pytest.raises(ValueError, match="cannot cut a"):
        full.cut(full.length + 1, 0)


def test_max_chunk_comes_from_the_tensorrt_plan() -> None:
    assert manifest_max_chunk({"target": "cpu"}) is None
    assert manifest_max_chunk({"tensorrt": {"plan": {"max_prefill": 2000}}}) is None  # before chunking
    assert manifest_max_chunk({"tensorrt": {"plan": {"max_chunk": 256}}}) == 256
    with pytest.raises(ValueError, match="max_chunk must be at least 1"):
        VLMRunner(object(), object(), None, max_chunk=0)


def test_chunk_sizes() -> None:
    assert fit.chunk_sizes(0, 4) == []
    assert fit.chunk_sizes(10, None) == [10] and fit.chunk_sizes(10, 10) == [10]
    assert fit.chunk_sizes(10, 4) == [4, 4, 2] and fit.chunk_sizes(8, 4) == [4, 4]


# -- what the runtime holds at once: egovlm.export.fit's count, measured ---------------------------


class LiveKV:
    """Tracks every KV buffer a decoder call takes or returns (layer 0's key stands for all) and
    records, at each call, the tokens of all of them still alive."""

    def __init__(self, runner: VLMRunner) -> None:
        self.live: dict[int, int] = {}
        self.peaks: list[int] = []
        self.decoder = runner.backend.decoder
        runner.backend.decoder = self

    def track(self, array: np.ndarray) -> None:
        if id(array) not in self.live:
            self.live[id(array)] = int(array.shape[2])
            weakref.finalize(array, self.live.pop, id(array), None)

    def __call__(self, feeds: dict[str, Any]) -> Any:
        self.track(feeds["past_key.0"])
        logits, presents = self.decoder(feeds)
        self.track(presents[0])
        self.peaks.append(sum(self.live.values()))
        return logits, presents

    def reset(self) -> None:
        self.peaks.clear()


def test_the_runtime_holds_what_the_fit_check_counts(tiny_export: Path) -> None:
    """The export backend's question and rebuild paths hold, beyond the warm prefix, exactly
    fit.extend_held / the decode steps' input and output: in particular a question does not keep its
    first state while decoding, and a rebuild does not keep the reused keyframes' copy past the first
    chunk."""
    from egovlm.edge.backends.base import GenerationParams
    from egovlm.edge.backends.onnx_backend import OnnxBackend
    from egovlm.edge.buffer import KeyframeBuffer
    from egovlm.frames import resize_for_model

    backend = OnnxBackend.load(tiny_export, threads=1)
    chunk = 5
    backend.runner.max_chunk = chunk
    live = LiveKV(backend.runner)
    rng = np.random.default_rng(3)
    buf = KeyframeBuffer(capacity=4)
    from egovlm.descriptor import describe

    for i in range(4):
        img = rng.integers(0, 256, (84, 112, 3), dtype=np.uint8)
        buf.add(1.0 + i, resize_for_model(img, backend.keyframe_size), describe(img))
    kfs = buf.snapshot().keyframes
    feats = {k.id: backend.encode_keyframe(k.id, k.image) for k in kfs}
    warm = backend.build_prefix(1, kfs, [feats[k.id] for k in kfs])
    p = warm.n_tokens

    # A rebuild reusing the first keyframe (two later ones left): a cut of the warm prefix.
    kept = [kfs[0], kfs[3]]
    live.reset()
    state = backend.build_prefix(2, kept, [feats[k.id] for k in kept], previous=warm)
    r, new = state.reused_tokens, state.n_tokens - state.reused_tokens
    assert 0 < r < p and len(fit.chunk_sizes(new, chunk)) > 1
    assert max(live.peaks) - p == fit.extend_held(r, new, chunk, copy=r)
    del state

    # A question on the warm prefix, with a long answer.
    n = 8
    live.reset()
    out = backend.generate(warm, "What did I pick up?", None, GenerationParams(max_new_tokens=n))
    assert len(out.token_ids) == n  # random weights: no EOS within 8 tokens
    s = out.n_prefill_tokens
    assert max(live.peaks) - p == max(fit.extend_held(p, s, chunk), 2 * (p + s + n) - 3)
