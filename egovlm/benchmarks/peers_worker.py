"""One runtime of ``egovlm bench peers`` in its own process: JSON lines in, JSON lines out.

The driver (:mod:`egovlm.benchmarks.peers`) starts one worker per runtime and precision and keeps it
alive for the whole run, so runtimes can be interleaved repeat by repeat while each keeps its own
caches, and each process's peak RSS is that runtime's alone. Peer runtimes run in the peers venv
(``scripts/setup-peers.sh``), where egovlm is not installed: this file imports only the standard
library at module level and each adapter imports its runtime lazily.

Protocol (one JSON object per line):

- worker -> driver first: ``{"ready": true, "load_s": ..., "versions": {...}}`` or ``{"error": ...}``;
- ``{"op": "reset", "capacity": K}``: forget every frame and cached state (a new K);
- ``{"op": "ask", "frames": [{"path", "t"}], "prompt": str, "system": str, "parts": [...],
  "question": str, "options": {...}, "max_new_tokens": n}`` -> ``{"ttft_ms", "decode_tok_s",
  "text", "token_ids", "n_new"}``. ``prompt`` is the contract's prompt rendered by the model's own
  chat template (images as ``<|vision_start|><|image_pad|><|vision_end|>``); ``parts`` is the same
  user turn as text/image items for chat-message APIs;
- ``{"op": "quit"}``.

TTFT is measured inside the worker from the request to the first generated token, image decoding
excluded for every runtime (frames are decoded once, when first seen, as a camera pipeline would).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

IMAGE_TAG = "<|vision_start|><|image_pad|><|vision_end|>"


def _rgb(path: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class _Timer:
    """First-token and per-token times of one generation (decode tok/s over tokens 2..n)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.last = self.t0
        self.n = 0

    def token(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.n += 1

    def result(self, text: str, token_ids: list[int] | None) -> dict[str, Any]:
        if self.first is None:
            raise RuntimeError("the runtime produced no token")
        decode_s = self.last - self.first
        return {
            "ttft_ms": (self.first - self.t0) * 1000,
            "decode_tok_s": (self.n - 1) / decode_s if self.n > 1 and decode_s > 0 else None,
            "text": text,
            "token_ids": token_ids,
            "n_new": self.n,
        }


class Ours:
    """egovlm's edge engine (torch or ONNX Runtime backend) with its cached visual prefix."""

    def __init__(self, kind: str, model: str, threads: int) -> None:
        from egovlm.edge.backends import create_backend

        self.backend = create_backend(kind, model, device="cpu", threads=threads)
        self.engine: Any = None
        self.images: dict[str, Any] = {}
        self.versions = {"egovlm": _version("egovlm"), "torch": _version("torch")}
        if kind == "onnx":
            self.versions["onnxruntime"] = _version("onnxruntime")

    def reset(self, capacity: int) -> None:
        from egovlm.edge.buffer import KeyframeBuffer
        from egovlm.edge.engine import Engine, EngineParams

        self.engine = Engine(self.backend, KeyframeBuffer(capacity=capacity), EngineParams())

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.engine is None:
            raise RuntimeError("send reset before ask")
        frames = req["frames"]
        for f in frames:
            if f["path"] not in self.images:
                self.images[f["path"]] = _rgb(f["path"])
        held = {k.t for k in self.engine.buffer.snapshot().keyframes}
        t0 = time.perf_counter()
        for f in frames:  # new keyframes arrive; the buffer evicts as it would on the device
            if float(f["t"]) not in held:
                self.engine.add_keyframe(float(f["t"]), self.images[f["path"]])
        insert_ms = (time.perf_counter() - t0) * 1000
        now = [k.t for k in self.engine.buffer.snapshot().keyframes]
        if now != [float(f["t"]) for f in frames]:
            raise RuntimeError(
                f"the engine's buffer holds t={now}, the driver expected {[f['t'] for f in frames]}"
            )
        ans = self.engine.ask(req["question"], req["options"], max_new_tokens=req["max_new_tokens"])
        lat = ans.latency
        return {
            "ttft_ms": lat.ttft_ms + insert_ms,
            "decode_tok_s": lat.decode_tok_s if lat.n_new_tokens > 1 else None,
            "text": ans.text,
            "token_ids": list(ans.token_ids),
            "n_new": lat.n_new_tokens,
            "prefill_tokens": lat.n_prefill_tokens,
        }


class LlamaPrefixReuse:
    """llama.cpp (llama-cpp-python + libmtmd) keeping its KV cache between requests and
    re-evaluating only from the first chunk that differs, as llama-server's prompt cache does
    (``cache_prompt``: longest common prefix of text tokens and image chunks).

    llama-cpp-python's own ``Qwen25VLChatHandler`` clears the KV cache on every call (see
    :class:`LlamaChatHandler`), so this adapter drives the same libmtmd calls the handler makes
    (``mtmd_tokenize`` + ``mtmd_helper_eval_chunk_single`` + ``Llama.eval``) without the reset."""

    def __init__(self, model: str, mmproj: str, threads: int, n_ctx: int) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        self.lc, self.mtmd = llama_cpp, mtmd
        self.llm = llama_cpp.Llama(
            model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        self.ctx = mtmd.mtmd_init_from_file(mmproj.encode(), self.llm._model.model, params)
        if not self.ctx:
            raise RuntimeError(f"libmtmd could not load the projector {mmproj}")
        self.marker = mtmd.mtmd_default_marker().decode()
        self.bitmaps: dict[str, Any] = {}
        self.done: list[tuple[Any, int]] = []  # (chunk key, n_past after it) in the KV cache now
        self.versions = {"llama-cpp-python": llama_cpp.__version__}

    def reset(self, capacity: int) -> None:
        self._truncate(0)

    def _truncate(self, pos: int) -> None:
        mem = self.lc.llama_get_memory(self.llm._ctx.ctx)
        self.lc.llama_memory_seq_rm(mem, 0, pos, -1)
        self.llm.n_tokens = pos
        if pos == 0:
            self.done = []

    def _bitmap(self, path: str) -> Any:
        if path not in self.bitmaps:
            rgb = _rgb(path)
            h, w = rgb.shape[:2]
            data = (self.lc.ctypes.c_uint8 * rgb.nbytes).from_buffer_copy(rgb.tobytes())
            self.bitmaps[path] = self.mtmd.mtmd_bitmap_init(w, h, data)
        return self.bitmaps[path]

    def _chunks(self, req: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any]]]:
        m = self.mtmd
        text = req["prompt"].replace(IMAGE_TAG, self.marker).encode()
        inp = m.mtmd_input_text()
        inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), False, True
        paths = [f["path"] for f in req["frames"]]
        arr = (m.mtmd_bitmap_p_ctypes * len(paths))(*[self._bitmap(p) for p in paths])
        chunks = m.mtmd_input_chunks_init()
        rc = m.mtmd_tokenize(self.ctx, chunks, self.lc.ctypes.byref(inp), arr, len(paths))
        if rc != 0:
            m.mtmd_input_chunks_free(chunks)
            raise RuntimeError(f"mtmd_tokenize failed with code {rc}")
        out, image = [], 0
        for i in range(m.mtmd_input_chunks_size(chunks)):
            chunk = m.mtmd_input_chunks_get(chunks, i)
            if m.mtmd_input_chunk_get_type(chunk) == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = self.lc.ctypes.c_size_t()
                ptr = m.mtmd_input_chunk_get_tokens_text(chunk, self.lc.ctypes.byref(n))
                out.append((("text", tuple(ptr[j] for j in range(n.value))), chunk))
            else:
                out.append((("image", paths[image]), chunk))
                image += 1
        return chunks, out

    def _reuse(self, keys: list[Any]) -> tuple[int, int, int]:
        """(chunks fully reused, tokens reused of the next text chunk, KV position to keep)."""
        pos = 0
        for i, key in enumerate(keys):
            if i >= len(self.done):
                return i, 0, pos
            old, after = self.done[i]
            if old == key:
                pos = after
                continue
            if key[0] == old[0] == "text":
                same = next((j for j, (a, b) in enumerate(zip(key[1], old[1], strict=False)) if a != b), None)
                same = min(len(key[1]), len(old[1])) if same is None else same
                return i, same, pos + same
            return i, 0, pos
        return len(keys), 0, pos

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        m, lc, llm = self.mtmd, self.lc, self.llm
        timer = _Timer()
        chunks, items = self._chunks(req)
        try:
            full, partial, pos = self._reuse([k for k, _ in items])
            if full == len(items):  # the whole prompt is cached: recompute its last token's logits
                full, partial = len(items) - 1, max(len(items[-1][0][1]) - 1, 0)
                pos = (self.done[full - 1][1] if full else 0) + partial
            self._truncate(pos)
            self.done = self.done[:full]
            for i in range(full, len(items)):
                key, chunk = items[i]
                if key[0] == "text":
                    llm.eval(list(key[1][partial if i == full else 0 :]))
                else:
                    new_past = lc.llama_pos(0)
                    rc = m.mtmd_helper_eval_chunk_single(
                        self.ctx,
                        llm._ctx.ctx,
                        chunk,
                        llm.n_tokens,
                        0,
                        llm.n_batch,
                        False,
                        lc.ctypes.byref(new_past),
                    )
                    if rc != 0:
                        raise RuntimeError(f"mtmd_helper_eval_chunk_single failed with code {rc}")
                    llm.n_tokens = new_past.value
                self.done.append((key, llm.n_tokens))
        finally:
            m.mtmd_input_chunks_free(chunks)
        n_vocab = llm.n_vocab()
        eos = llm.token_eos()
        tokens: list[int] = []
        for _ in range(req["max_new_tokens"]):
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
            tok = int(logits.argmax())
            timer.token()
            tokens.append(tok)
            if tok == eos:
                break
            llm.eval([tok])
        text = llm.detokenize([t for t in tokens if t != eos]).decode("utf-8", errors="replace")
        return timer.result(text, tokens)


class LlamaChatHandler:
    """llama-cpp-python as its documentation runs Qwen2.5-VL: ``Llama(chat_handler=Qwen25VLChatHandler
    (clip_model_path=mmproj))`` with its prompt cache on (``llm.set_cache(LlamaRAMCache())``), greedy."""

    def __init__(self, model: str, mmproj: str, threads: int, n_ctx: int) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Qwen25VLChatHandler

        handler = Qwen25VLChatHandler(clip_model_path=mmproj, verbose=False)
        self.llm = llama_cpp.Llama(
            model_path=model,
            chat_handler=handler,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.llm.set_cache(llama_cpp.LlamaRAMCache())
        self.versions = {"llama-cpp-python": llama_cpp.__version__}

    def reset(self, capacity: int) -> None:
        self.llm.reset()

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        content = [
            {"type": "image_url", "image_url": {"url": "file://" + p["image"]}} if "image" in p else p
            for p in req["parts"]
        ]
        messages = [{"role": "system", "content": req["system"]}, {"role": "user", "content": content}]
        timer = _Timer()
        pieces = []
        stream = self.llm.create_chat_completion(
            messages=messages,
            max_tokens=req["max_new_tokens"],
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
            stream=True,
        )
        for chunk in stream:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                timer.token()
                pieces.append(piece)
        res = timer.result("".join(pieces), None)
        # The stream holds text back while it could still match a stop string, so chunk times do not
        # time tokens: decode speed is the reuse adapter's (the same llama.cpp context and kernels).
        res["decode_tok_s"] = None
        return res


class OpenVINOGenAI:
    """OpenVINO GenAI's ``VLMPipeline`` on an ``optimum-cli export openvino`` folder, greedy, with the
    prompt already rendered by the model's chat template (``apply_chat_template = False``) and its
    images as OpenVINO tensors. ``prefix_caching`` runs it on the continuous-batching scheduler with
    ``SchedulerConfig.enable_prefix_caching`` (OpenVINO GenAI's documented KV reuse across requests)."""

    def __init__(self, model: str, threads: int, prefix_caching: bool) -> None:
        import openvino as ov
        import openvino_genai as og

        self.ov, self.og = ov, og
        props: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
        if prefix_caching:
            sched = og.SchedulerConfig()
            sched.enable_prefix_caching = True
            sched.cache_size = 2  # GB of KV blocks
            props["scheduler_config"] = sched
        self.pipe = og.VLMPipeline(model, "CPU", **props)
        self.tensors: dict[str, Any] = {}
        self.versions = {"openvino": ov.__version__, "openvino-genai": og.__version__}

    def reset(self, capacity: int) -> None:
        self.tensors = {}

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        for f in req["frames"]:
            if f["path"] not in self.tensors:
                self.tensors[f["path"]] = self.ov.Tensor(_rgb(f["path"])[None])
        cfg = self.og.GenerationConfig()
        cfg.max_new_tokens = req["max_new_tokens"]
        cfg.do_sample = False
        cfg.apply_chat_template = False
        timer = _Timer()
        pieces: list[str] = []

        def on_text(piece: str) -> bool:
            timer.token()
            pieces.append(piece)
            return False  # keep going

        images = [self.tensors[f["path"]] for f in req["frames"]]
        res = self.pipe.generate(req["prompt"], images=images, generation_config=cfg, streamer=on_text)
        n = len(res.perf_metrics.raw_metrics.m_new_token_times) if hasattr(res, "perf_metrics") else 0
        if n:  # the streamer joins tokens into words: count tokens from the pipeline's own metrics
            timer.n = max(timer.n, n)
        return timer.result(res.texts[0], None)


ADAPTERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "ours-torch": lambda a: Ours("torch", a.model, a.threads),
    "ours-onnx": lambda a: Ours("onnx", a.model, a.threads),
    "llama-reuse": lambda a: LlamaPrefixReuse(a.model, a.mmproj, a.threads, a.n_ctx),
    "llama-chat": lambda a: LlamaChatHandler(a.model, a.mmproj, a.threads, a.n_ctx),
    "openvino": lambda a: OpenVINOGenAI(a.model, a.threads, prefix_caching=False),
    "openvino-pc": lambda a: OpenVINOGenAI(a.model, a.threads, prefix_caching=True),
}


def serve(adapter: Any, proto: Any) -> None:
    """Answer requests until ``quit`` or end of input; a failing request answers with its error."""
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            return
        try:
            if op == "reset":
                adapter.reset(int(req["capacity"]))
                res: dict[str, Any] = {"ok": True}
            elif op == "ask":
                res = adapter.ask(req)
            else:
                res = {"error": f"unknown op {op!r}"}
        except Exception as e:  # the driver records the error for this runtime and goes on
            res = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(res) + "\n")
        proto.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", choices=sorted(ADAPTERS), required=True)
    ap.add_argument("--model", required=True, help="model / export / GGUF / OpenVINO folder")
    ap.add_argument("--mmproj", default=None, help="llama.cpp: the multimodal projector GGUF")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=8192)
    a = ap.parse_args(argv)
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    try:
        adapter = ADAPTERS[a.runtime](a)
    except Exception as e:
        proto.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        proto.flush()
        return
    ready = {"ready": True, "load_s": time.perf_counter() - t0, "versions": adapter.versions}
    proto.write(json.dumps(ready) + "\n")
    proto.flush()
    serve(adapter, proto)


if __name__ == "__main__":
    main()
