"""Ego4D narrations → multiple-choice questions with ground-truth times (a training set).

Ego4D's ``narration.json`` (from the ``annotations`` download) maps each canonical video to one or
two independent narration passes::

    {video_uid: {"narration_pass_1": {"narrations": [{"timestamp_sec", "timestamp_frame",
                 "narration_text": "#C C picks up the knife", "annotation_uid"}, …],
                 "summaries": [{"start_sec", "end_sec", "summary_text", …}, …]},
                 "narration_pass_2": {…}}, …}

One pass is used per video (the first present of ``passes``); passes are never merged, since both
narrate the same moments. Only the camera wearer's narrations (``#C C <verb> <object> …``) are
parsed, into verb, object and — for put-downs — place (:func:`parse_narration`); anything else is
skipped and counted, never fatal. Each video's narrations are cut into windows of ``window_s``
seconds and every window yields the questions it supports, EgoSchema/EgoSynth style (five
options, distractors from the same window first, then from the same video):

* ``first_pickup`` / ``last_pickup`` / ``first_putdown`` / ``last_putdown`` — which object;
* ``order`` — which of five actions came first, or which came right after a given one;
* ``count`` — how many times C picked up an object (or anything);
* ``where`` — where C put an object, when the narration names the place.

``salient_times`` are the narration timestamps the answer rests on (the keyframe reward's ground
truth); ``start_s``/``end_s`` cut the clip around the window's narrations, stopping halfway to the
neighbouring narrations so no other event leaks into the clip. Everything is deterministic given
``seed``. Caveat: narrations are points in time written by annotators every few seconds, so a
long action narrated twice counts twice — counts are as good as the narrations.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.datasets.common import (
    SOURCE_VIDEO,
    ImportReport,
    Where,
    check_videos,
    distinct,
    load_json,
    relative,
    row_rng_seed,
)
from egovlm.schema import DatasetError, QAItem
from egovlm.synth.qa import QADraft, assign_letters

SOURCE = "ego4d-narrations"
PASSES = ("narration_pass_1", "narration_pass_2")

# The narrations follow one fixed template ("#C C <verb>s <object> <preposition> <place>"), so a
# small hand-written parser covers them; NLTK/spaCy taggers would need model downloads at run time.
WEARER = re.compile(r"^\s*#c\s+c\b\s*(?P<rest>.*)$", re.IGNORECASE)
TAG = re.compile(r"#\w+")
PARTICLES = {"up", "down", "out", "off", "back", "away", "on"}  # right after the verb: phrasal
CUT = {
    "in", "into", "on", "onto", "from", "with", "to", "at", "inside", "under", "over", "beside",
    "near", "across", "through", "around", "towards", "toward", "by", "behind", "above", "below",
    "against", "along", "for", "using", "and", "while", "then", "down", "up", "back", "away",
    "aside", "off", "out", "as", "before", "after",
}  # fmt: skip
PLACE_PREPS = {"on": "on", "onto": "on", "in": "in", "into": "in", "inside": "in", "under": "under",
               "at": "at", "beside": "beside", "near": "near"}  # fmt: skip  # one wording per place
DETERMINERS = {
    "the", "a", "an", "some", "his", "her", "its", "their", "my", "your", "another", "this", "that",
    "these", "those", "one", "other",
}  # fmt: skip
PICK = {"pick up", "pick", "lift", "lift up", "grab", "take", "take out", "take up"}
PUT = {"put", "put down", "put back", "place", "place back", "drop", "keep", "set", "set down"}
MARGIN_S = 2.0  # clip margin before the first / after the last narration of a window


@dataclass(frozen=True)
class Event:
    """One parsed narration of the camera wearer."""

    t: float
    verb: str  # lemma with particle: "pick up", "put", "open"
    obj: str | None  # "knife"; None for verbs without an object ("looks around")
    place: str | None  # "on the table" for put-downs that name it
    text: str  # the action as an option: "C picks up the knife from the table"
    sure: bool = True  # False: "#unsure" or a pick-up/put-down without a readable object

    @property
    def kind(self) -> str:
        return "pick" if self.verb in PICK else "put" if self.verb in PUT else "other"


def _lemma(word: str) -> str:
    """Third-person verb → base form ("picks" → "pick", "washes" → "wash", "carries" → "carry")."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes", "oes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _noun_phrase(words: Sequence[str]) -> tuple[str | None, int]:
    """The noun phrase at the start of ``words`` (determiners dropped) and how many words it used."""
    kept: list[str] = []
    n = 0
    for n, word in enumerate(words, start=1):
        if word in CUT or word == ",":
            n -= 1
            break
        if word not in DETERMINERS or kept:
            kept.append(word)
    else:
        n = len(words)
    phrase = " ".join(w for w in kept if w.isalpha() or "-" in w or "'" in w)
    return (phrase or None), n


def parse_narration(text: Any, t: float) -> Event | None:
    """The camera wearer's action in one narration, or None when it is not one (or cannot be read)."""
    if not isinstance(text, str):
        return None
    m = WEARER.match(text)
    if m is None:
        return None
    rest = TAG.sub(" ", m.group("rest")).lower()
    words = re.findall(r"[a-z][a-z'\-]*|,", rest)
    if not words or words[0] in CUT or words[0] in DETERMINERS or words[0] == ",":
        return None
    verb, i = _lemma(words[0]), 1
    if i < len(words) and words[i] in PARTICLES:
        verb, i = f"{verb} {words[i]}", i + 1
    obj, used = _noun_phrase(words[i:])
    i += used
    # "#unsure" marks an annotator's doubt; "C picks up" without an object says too little. Such an
    # event never becomes an answer or option, but it still rules out questions it could make wrong
    # (a doubtful pick-up may be the real "last pick-up").
    sure = "#unsure" not in text.lower() and not (obj is None and verb in PICK | PUT)
    place = None
    if verb in PUT:
        while i < len(words) and words[i] in {"down", "back", "away", "aside"}:
            i += 1
        if i < len(words) and words[i] in PLACE_PREPS:
            noun, _ = _noun_phrase(words[i + 1 :])
            place = f"{PLACE_PREPS[words[i]]} the {noun}" if noun else None
    action = " ".join(m.group("rest").split()).rstrip(" .")
    action = TAG.sub("", action).strip()
    if not action:
        return None
    return Event(t=t, verb=verb, obj=obj, place=place, text=f"C {action}", sure=sure)


# --- reading the file -----------------------------------------------------------------------


def _narrations(entry: Any, passes: Sequence[str]) -> list[Any] | None:
    """The narration list of the first pass present, or None."""
    if not isinstance(entry, dict):
        return None
    for name in passes:
        block = entry.get(name)
        if isinstance(block, dict) and isinstance(block.get("narrations"), list):
            return list(block["narrations"])
    return None


def parse_video(narrations: list[Any], report: ImportReport) -> list[Event]:
    events = []
    for n in narrations:
        t = n.get("timestamp_sec") if isinstance(n, dict) else None
        if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
            report.skip("narrations without a valid timestamp_sec")
            continue
        text = n.get("narration_text")
        if not isinstance(text, str) or not WEARER.match(text):
            report.skip("narrations not of the camera wearer (#C C …)")
            continue
        event = parse_narration(text, float(t))
        if event is None:
            report.skip("narrations that could not be parsed")
            continue
        if not event.sure:
            report.skip("uncertain narrations (#unsure, or no object; kept only to rule questions out)")
        events.append(event)
    return sorted(events, key=lambda e: e.t)


# --- questions --------------------------------------------------------------------------------


def _the(obj: str) -> str:
    return f"the {obj}"


def _content(text: str) -> set[str]:
    return {w for w in text.lower().split() if w not in DETERMINERS and w not in PLACE_PREPS and w != "of"}


def _pad(
    first: list[str],
    *more: list[str],
    exclude: Sequence[str],
    rng: np.random.Generator,
    unlike: str | None = None,
) -> list[str]:
    """Four distractors: from ``first`` (shuffled), then each further pool, none in ``exclude``; with
    ``unlike``, none sharing a content word with it ("the milk" is no distractor for "the bottle of
    milk": both could be right)."""
    out: list[str] = []
    for pool in (first, *more):
        cands = distinct(pool, exclude=[*exclude, *out])
        if unlike is not None:
            cands = [c for c in cands if not _content(c) & _content(unlike)]
        out += [cands[int(k)] for k in rng.permutation(len(cands))][: 4 - len(out)]
    return out


def _first_last(win: list[Event], video: list[Event], kind: str, rng: np.random.Generator) -> list[QADraft]:
    if any(e.kind == kind and not e.sure for e in win):
        return []
    hits = [e for e in win if e.kind == kind and e.obj]
    objects = distinct(e.obj for e in hits if e.obj)
    if len(objects) < 2:
        return []
    verb = "pick up" if kind == "pick" else "put down"
    in_window = [_the(o) for o in distinct(e.obj for e in win if e.obj)]
    in_video = [_the(o) for o in distinct(e.obj for e in video if e.obj)]
    out = []
    for which, event in (("first", hits[0]), ("last", hits[-1])):
        assert event.obj is not None
        answer = _the(event.obj)
        wrong = _pad(
            [_the(o) for o in objects], in_window, in_video, exclude=[answer], rng=rng, unlike=answer
        )
        if len(wrong) == 4:
            name = f"{which}_{'pickup' if kind == 'pick' else 'putdown'}"
            question = f"Which object did C {verb} {which} in this clip?"
            out.append(QADraft(name, question, _the(event.obj), wrong, [event.t]))
    return out


def _order(win: list[Event], video: list[Event], rng: np.random.Generator) -> list[QADraft]:
    """Which of five actions came first; what came right after a given action."""
    counts = Counter(e.text.lower() for e in win)
    once = [e for e in win if e.sure and counts[e.text.lower()] == 1]
    out: list[QADraft] = []
    if len(once) >= 5:
        picked = sorted((once[int(k)] for k in rng.permutation(len(once))[:5]), key=lambda e: e.t)
        out.append(
            QADraft(
                "order",
                "Which of these did C do first in this clip?",
                picked[0].text,
                [e.text for e in picked[1:]],
                [e.t for e in picked],
                meta={"variant": "first_of"},
            )
        )
    follows = [
        i for i, e in enumerate(win[:-1]) if e.sure and win[i + 1].sure and counts[e.text.lower()] == 1
    ]
    if follows:
        i = follows[int(rng.integers(len(follows)))]
        cur, nxt = win[i], win[i + 1]
        pools = [[e.text for e in events if e.sure] for events in (win, video)]
        wrong = _pad(*pools, exclude=[nxt.text, cur.text], rng=rng)
        if len(wrong) == 4:
            question = f'What did C do right after this: "{cur.text}"?'
            meta = {"variant": "next_action"}
            out.append(QADraft("order", question, nxt.text, wrong, [cur.t, nxt.t], meta=meta))
    return out


def _count(win: list[Event], rng: np.random.Generator) -> list[QADraft]:
    picks = [e for e in win if e.kind == "pick" and e.obj]
    if not picks or any(e.kind == "pick" and not e.sure for e in win):
        return []
    objects = distinct(e.obj for e in picks if e.obj)
    if rng.random() < 0.5:
        name = objects[int(rng.integers(len(objects)))]
        hits = [e for e in picks if e.obj and e.obj.lower() == name.lower()]
        question, variant = f"How many times did C pick up the {name} in this clip?", "object"
    else:
        hits, question, variant = picks, "How many times did C pick something up in this clip?", "total"
    meta = {"variant": variant}
    return [QADraft("count", question, str(len(hits)), [], [e.t for e in hits], meta=meta, numeric=len(hits))]


def _where(win: list[Event], video: list[Event], rng: np.random.Generator) -> list[QADraft]:
    puts = [e for e in win if e.kind == "put" and e.sure and e.obj and e.place]
    per_obj = Counter(e.obj for e in puts)
    single = [e for e in puts if per_obj[e.obj] == 1]  # one placement: "where" has one answer
    if not single:
        return []
    event = single[int(rng.integers(len(single)))]
    assert event.place is not None and event.obj is not None
    places = [e.place for e in video if e.place]
    wrong = _pad(
        [e.place for e in win if e.place], places, exclude=[event.place], rng=rng, unlike=event.place
    )
    if len(wrong) < 4:
        return []
    return [QADraft("where", f"Where did C put the {event.obj} in this clip?", event.place, wrong, [event.t])]


def windows(events: list[Event], window_s: float) -> list[list[Event]]:
    """Consecutive groups of events, each spanning less than ``window_s`` seconds."""
    out: list[list[Event]] = []
    for e in events:
        if out and e.t - out[-1][0].t < window_s:
            out[-1].append(e)
        else:
            out.append([e])
    return out


def _clip_bounds(win: list[Event], events: list[Event]) -> tuple[float, float]:
    """[start_s, end_s] around the window's narrations, at most halfway to the neighbouring ones."""
    first, last = win[0].t, win[-1].t
    before = [e.t for e in events if e.t < first]
    after = [e.t for e in events if e.t > last]
    lo = max(first - MARGIN_S, (before[-1] + first) / 2 if before else 0.0, 0.0)
    hi = min(last + MARGIN_S, (last + after[0]) / 2 if after else last + MARGIN_S)
    return round(lo, 6), round(max(hi, last + 1e-3), 6)


def video_drafts(
    uid: str, events: list[Event], window_s: float, seed: int
) -> list[tuple[QADraft, tuple[float, float], int]]:
    """Every question each window of a video supports, with its clip bounds and window index."""
    out = []
    for w, win in enumerate(windows(events, window_s)):
        rng = np.random.default_rng(row_rng_seed(seed, f"{uid}/{w}"))
        drafts = [
            *_first_last(win, events, "pick", rng),
            *_first_last(win, events, "put", rng),
            *_order(win, events, rng),
            *_count(win, rng),
            *_where(win, events, rng),
        ]
        bounds = _clip_bounds(win, events)
        out += [(d, bounds, w) for d in drafts]
    return out


def build_ego4d_narrations(
    path: Path,
    videos: Path,
    out: Path,
    require_videos: bool = True,
    seed: int = 0,
    window_s: float = 180.0,
    passes: Sequence[str] = PASSES,
) -> tuple[list[QAItem], ImportReport]:
    """Questions from every video in ``narration.json`` (sorted by video_uid, so the output is stable)."""
    if window_s <= 0:
        raise DatasetError(f"window_s must be > 0, got {window_s}")
    data = load_json(path, "Ego4D narration file")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object mapping video_uid to its narration passes")
    where = Where(path)
    out_dir = out.parent.resolve()
    report = ImportReport()
    items: list[QAItem] = []
    missing: list[str] = []
    index = {uid: i for i, uid in enumerate(data)}
    for uid in sorted(data):
        narrations = _narrations(data[uid], passes)
        if narrations is None:
            if not isinstance(data[uid], dict):
                raise DatasetError(f"{where(index[uid])}:{uid}: expected an object of narration passes")
            report.skip("videos without narrations")
            continue
        events = parse_video(narrations, report)
        drafts = video_drafts(uid, events, window_s, seed)
        if not drafts:
            report.skip("videos with too few parsed narrations for any question")
            continue
        video = (videos / f"{uid}.mp4").resolve()
        if not video.is_file():
            missing.append(str(video))
            if require_videos:
                continue
        items += _video_items(uid, video, out_dir, drafts, seed)
    check_videos(missing, require_videos)
    report.rows = len(items)
    return items, report


def _video_items(
    uid: str, video: Path, out_dir: Path, drafts: list[tuple[QADraft, tuple[float, float], int]], seed: int
) -> list[QAItem]:
    """Letters balanced per video in blocks of five (egovlm.synth.qa.assign_letters), then the clip window."""
    counter: Counter[tuple[int, str]] = Counter()
    rows = []
    for draft, _bounds, w in drafts:
        counter[(w, draft.question_type)] += 1
        rid = f"ego4d-{uid}-w{w:03d}-{draft.question_type}-{counter[(w, draft.question_type)]}"
        meta = {SOURCE_VIDEO: uid, "window": w}
        rows.append((draft, {"id": rid, "video": relative(video, out_dir), "duration_s": None, "meta": meta}))
    lettered = assign_letters(rows, np.random.default_rng(row_rng_seed(seed, f"{uid}/letters")))
    items = []
    for item, (_draft, (lo, hi), _w) in zip(lettered, drafts, strict=True):
        fields = item.model_dump() | {"source": SOURCE, "start_s": lo, "end_s": hi}
        items.append(QAItem.model_validate(fields))
    return items
