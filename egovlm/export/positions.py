"""M-RoPE position ids on the host, in numpy (docs/architecture.md#dependency-facts).

Hand-written rather than calling transformers' ``get_rope_index`` because the device runtime must not
need torch to compute them, and because the edge runtime extends a cached prefix: it needs the next
position after a prefix, which this module returns explicitly. The rule (images only; no video) is
Qwen2.5-VL's: text tokens advance t = h = w by one; an image's merged-token grid ``(gh, gw)`` starting
at position ``p`` gets t = p, h = p + row, w = p + col, and the next token starts at ``p + max(gh, gw)``.
``tests/export/test_export_positions.py`` checks it against ``get_rope_index`` token for token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mrope_positions(
    input_ids: Sequence[int] | np.ndarray,
    image_token_id: int,
    image_grids: Sequence[tuple[int, int]],
    start: int = 0,
) -> tuple[np.ndarray, int]:
    """Positions ``[3, seq]`` (int64) for one unpadded sequence, and the position of the next token.

    ``image_grids`` holds each image's merged grid ``(height, width)`` (patch grid // merge size), in
    order; every run of ``image_token_id`` must have exactly ``height * width`` tokens. ``start`` is the
    next position of an already-cached prefix (0 for a fresh sequence).
    """
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    out = np.empty((3, ids.size), dtype=np.int64)
    grids = list(image_grids)
    pos, i, image = start, 0, 0
    while i < ids.size:
        if ids[i] != image_token_id:
            out[:, i] = pos
            pos, i = pos + 1, i + 1
            continue
        if image >= len(grids):
            raise ValueError(f"image token run at index {i} but only {len(grids)} image grid(s) given")
        gh, gw = grids[image]
        n = gh * gw
        run = ids[i : i + n]
        if (
            run.size != n
            or not np.all(run == image_token_id)
            or (i + n < ids.size and ids[i + n] == image_token_id)
        ):
            raise ValueError(f"image {image + 1}: expected a run of {n} image tokens at index {i}")
        rows, cols = np.divmod(np.arange(n), gw)
        out[0, i : i + n] = pos
        out[1, i : i + n] = pos + rows
        out[2, i : i + n] = pos + cols
        pos += max(gh, gw)
        i += n
        image += 1
    if image != len(grids):
        raise ValueError(f"{len(grids)} image grid(s) given but {image} image token run(s) found")
    return out, pos


def decode_positions(next_position: int, count: int = 1) -> np.ndarray:
    """Positions ``[3, count]`` for text tokens appended after ``next_position`` (decode steps)."""
    row = np.arange(next_position, next_position + count, dtype=np.int64)
    return np.stack([row, row, row])
