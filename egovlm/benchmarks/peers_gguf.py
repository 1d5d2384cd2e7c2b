"""Run llama.cpp's ``convert_hf_to_gguf.py`` (in the peers venv), naming an unknown BPE pre-tokenizer.

llama.cpp's converter identifies a BPE tokenizer's pre-tokenizer by hashing the ids it gives for a
fixed test string and refuses any hash it has not been told about (``NotImplementedError: BPE
pre-tokenizer was not recognized``); upstream's fix is to register the model's hash in
``get_vocab_base_pre`` (``convert_hf_to_gguf_update.py``, which downloads the tokenizer from the hub).
A real Qwen2.5-VL tokenizer is registered (``qwen2``); our offline checkpoints carry their own small
byte-level BPE, whose ``tokenizer.json`` declares GPT-2's pre-tokenizer (``ByteLevel`` with its regex),
so this wrapper answers ``gpt-2`` for exactly that declaration and re-raises otherwise. It prints the
registration on stderr, and the benchmark report says it was needed; greedy agreement with torch then
checks the tokenisation end to end.

    python peers_gguf.py LLAMA_CPP_SRC MODEL_DIR [convert_hf_to_gguf.py options...]
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

GPT2_PRE = {"type": "ByteLevel", "use_regex": True}


def main(argv: list[str]) -> None:
    src, model, rest = Path(argv[0]), Path(argv[1]), argv[2:]
    sys.path[:0] = [str(src), str(src / "gguf-py")]
    import conversion.base as base  # llama.cpp's converter package (vendored tree)

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return str(original(self, tokenizer))
        except NotImplementedError:
            pre = json.loads((model / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
            if all(pre.get(k) == v for k, v in GPT2_PRE.items()):
                print(
                    "peers_gguf: BPE pre-tokenizer hash not registered in llama.cpp; tokenizer.json declares "
                    "ByteLevel(use_regex=True): registered as 'gpt-2'",
                    file=sys.stderr,
                )
                return "gpt-2"
            raise

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(src / "convert_hf_to_gguf.py"), str(model), *rest]
    runpy.run_path(str(src / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
