"""The torch backend's grouped-query attention (no K/V repeat) equals transformers' stock sdpa.

tests/edge/test_engine.py checks cached answers equal from-scratch ones end to end (the cached path
runs this attention, the scratch path the stock one); here the kernel is compared directly, on the
shapes where it differs from the stock function: several query tokens over a longer cache, a mask."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from egovlm.edge.backends.torch_backend import GQA_ATTENTION, TorchBackend, grouped_query_sdpa


def _inputs(q_len: int, kv_len: int, heads: int = 16, kv_heads: int = 2, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, q_len, 128, generator=g)
    k = torch.randn(1, kv_heads, kv_len, 128, generator=g)
    v = torch.randn(1, kv_heads, kv_len, 128, generator=g)
    # the question's causal mask over the cache: row i sees the prefix and question tokens 0..i
    mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)[None, None]
    return SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True), q, k, v, mask


@pytest.mark.parametrize(("q_len", "kv_len"), [(7, 40), (62, 300), (1, 50)])
def test_grouped_query_sdpa_equals_stock_sdpa(q_len: int, kv_len: int) -> None:
    module, q, k, v, mask = _inputs(q_len, kv_len)
    ours, _ = grouped_query_sdpa(module, q, k, v, mask, scaling=128**-0.5)
    stock, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=128**-0.5)
    assert ours.shape == stock.shape == (1, q_len, 16, 128)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)


def test_grouped_query_sdpa_respects_the_mask() -> None:
    """A wrong fold (query heads paired with the wrong mask rows) would let token 0 see the future."""
    module, q, k, v, mask = _inputs(5, 20)
    base, _ = grouped_query_sdpa(module, q, k, v, mask)
    v2 = v.clone()
    v2[:, :, -1] += 100.0  # only the last question token may see the last position
    moved, _ = grouped_query_sdpa(module, q, k, v2, mask)
    torch.testing.assert_close(moved[:, :-1], base[:, :-1])
    assert not torch.allclose(moved[:, -1], base[:, -1])


def test_backend_uses_it_for_the_language_model_only(tiny_model_dir: Path) -> None:
    backend = TorchBackend.load(tiny_model_dir)
    config = backend.model.config
    assert config.get_text_config()._attn_implementation == GQA_ATTENTION
    assert config.vision_config._attn_implementation == "sdpa"
