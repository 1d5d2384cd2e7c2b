"""``egovlm train merge --adapter DIR --out DIR``: fold a LoRA adapter into a 16-bit checkpoint.

export/ takes plain Hugging Face checkpoints: NF4 (QLoRA) bases cannot be exported, so the
adapter is merged into the *16-bit* base weights (PEFT ``merge_and_unload``), the base loaded
fresh in bfloat16/float16 even when training used a 4-bit base. The processor and the
``egovlm.json`` metadata travel with it. The result is written to a temporary folder beside
``out`` and renamed into place: ``out`` is either complete or untouched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from egovlm.models.files import EGOVLM_META

ADAPTER_CONFIG = "adapter_config.json"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


class MergeError(RuntimeError):
    pass


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def adapter_base(adapter: Path) -> str:
    cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise MergeError(f"{adapter / ADAPTER_CONFIG} names no base_model_name_or_path; pass --base")
    return str(base)


def load_merged(adapter: Path, base: str | None = None, dtype: Any = None) -> tuple[Any, Any, str]:
    """(merged model, processor, base id): the adapter applied and folded into the base weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not is_adapter(adapter):
        raise MergeError(f"{adapter} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    base = base or adapter_base(adapter)
    if not Path(base).exists() and base.startswith((".", "/", "~")):
        raise MergeError(f"base model {base} (from {adapter / ADAPTER_CONFIG}) does not exist; pass --base")
    model = AutoModelForImageTextToText.from_pretrained(
        base, dtype=dtype or torch.bfloat16, use_safetensors=True
    )
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    has_processor = any((adapter / name).is_file() for name in PROCESSOR_FILES)
    processor = AutoProcessor.from_pretrained(str(adapter) if has_processor else base)
    return merged, processor, base


def merge(
    adapter: Path, out: Path, base: str | None = None, dtype: str = "bfloat16", overwrite: bool = False
) -> Path:
    """Write the merged 16-bit checkpoint to ``out`` (see module docstring)."""
    import torch

    if dtype not in ("bfloat16", "float16"):
        raise MergeError(f"merge writes a 16-bit checkpoint: dtype must be bfloat16 or float16, got {dtype}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    merged, processor, base_id = load_merged(adapter, base, getattr(torch, dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / EGOVLM_META).write_text(json.dumps(_meta(adapter, base_id, dtype), indent=2) + "\n")
        tmp.chmod(0o755)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _meta(adapter: Path, base: str, dtype: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for src in (Path(base) / EGOVLM_META, adapter / EGOVLM_META):  # the adapter's (trained) wins
        if src.is_file():
            meta.update(json.loads(src.read_text()))
    meta.update(merged_from=str(adapter), base_model=base, dtype=dtype, trained=True)
    return meta


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
