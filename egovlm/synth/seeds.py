"""Seed derivation: every random stream in EgoSynth is a keyed child of one SeedSequence.

Children are derived by key (``spawn_key`` + a fixed number per purpose) rather than with
``SeedSequence.spawn``, which counts calls: the same (clip, purpose) then always gets the same
stream, however many times or in whatever order the streams are asked for. Clip seeds are keyed
by (split, base seed, clip index), so two splits can never share a clip's stream.
"""

from __future__ import annotations

import numpy as np

SPLITS: dict[str, int] = {"train": 0, "test": 1, "val": 2, "live": 3}

# purposes within a clip
SCRIPT, RENDER, QA, HEAD = 0, 1, 2, 3


def child(seq: np.random.SeedSequence, key: int) -> np.random.SeedSequence:
    """The child stream ``key`` of ``seq`` (stable: no hidden spawn counter)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key))


def clip_sequence(split: str, seed: int, index: int) -> np.random.SeedSequence:
    """The stream of clip ``index`` of ``split`` generated with base ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and clip index must be >= 0, got seed={seed}, index={index}")
    return np.random.SeedSequence(seed, spawn_key=(SPLITS[split], index))


def clip_seed_hex(seq: np.random.SeedSequence) -> str:
    """A 128-bit fingerprint of a clip's stream, recorded in the ground truth's meta."""
    words = seq.generate_state(4, np.uint32)
    return "".join(f"{int(w):08x}" for w in words)


def rng(seq: np.random.SeedSequence, key: int) -> np.random.Generator:
    return np.random.default_rng(child(seq, key))


def letters_sequence(split: str, seed: int) -> np.random.SeedSequence:
    """The stream that balances answer letters over a whole split (a 3-part key: never a clip's)."""
    return np.random.SeedSequence(seed, spawn_key=(SPLITS[split], 0, 1))
