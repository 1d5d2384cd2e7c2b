"""The optional wake phrase: with always-on listening, only speech that starts with it is a
question ("Hey Ego, what did I pick up?" → "what did I pick up?").

Checked on the transcript, not on audio: the speech model is already running on every
utterance, and a separate keyword spotter would be one more model to ship. Whisper spells
names loosely ("Hey, Ego." / "hey ego" / "Hey Eggo"), so the comparison ignores case and
punctuation and accepts a close spelling (difflib ratio ≥ ``min_ratio``).
"""

from __future__ import annotations

import difflib
import re

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def strip_wake_phrase(transcript: str, phrase: str, min_ratio: float = 0.75) -> str | None:
    """The question after the wake phrase, or None when the transcript does not start with it.
    An empty string means the phrase alone was said (no question yet)."""
    want = words(phrase)
    if not want:
        return transcript.strip()
    matches = list(_WORD.finditer(transcript))
    if len(matches) < len(want):
        return None
    said = " ".join(m.group(0).lower() for m in matches[: len(want)])
    if difflib.SequenceMatcher(None, said, " ".join(want)).ratio() < min_ratio:
        return None
    rest = transcript[matches[len(want) - 1].end() :]
    return rest.lstrip(" ,.;:!?-").strip()
