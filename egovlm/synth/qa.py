"""EgoSchema-style five-option questions from a clip's exact ground truth.

Each question is first built as a :class:`QADraft` (the correct text and four wrong ones, all
checked to be false against the script); letters are assigned later over a whole split by
:func:`assign_letters`, in blocks of five that each use every letter once, so the answer letters
are balanced and no position can be learned. Distractors name objects and places that are really
in the clip, so a question cannot be answered by spotting the odd one out. ``salient_times`` are
the times of the events the answer rests on (exact frame timestamps).

:func:`open_items` gives the open form (no options, the answer in words) of the question types in
:data:`OPEN_TYPES`: the same question and ground truth, answered with the text the
multiple-choice option uses ("the yellow banana").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egovlm.schema import OPTION_LETTERS, QAItem
from egovlm.synth.objects import CATALOGUE
from egovlm.synth.scene import PLACE_BY_NAME, PLACES
from egovlm.synth.script import ACTIVITIES, Event, Script

SOURCE = "egosynth"
# Question types asked in open form too: their answer is one object, named as the catalogue names it.
OPEN_TYPES = ("first_pickup", "last_pickup")
OPEN_ID_SUFFIX = "-open"


@dataclass
class QADraft:
    """A question before its options get letters. ``numeric`` options are shown in order."""

    question_type: str
    question: str
    correct: str
    distractors: list[str]
    salient_times: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    numeric: int | None = None  # the correct count, for count questions

    def __post_init__(self) -> None:
        if self.numeric is None and (len(self.distractors) != 4 or self.correct in self.distractors):
            raise ValueError(f"{self.question_type}: needs four distractors distinct from the answer")


def _the(name: str) -> str:
    return f"the {name}"


def _object_distractors(
    script: Script, exclude: set[str], prefer: list[str], rng: np.random.Generator
) -> list[str]:
    """Four other objects: preferred ones first, then others present, then absent kinds."""
    present = [o.name for o in script.objects]
    pool: list[str] = []
    for group in (
        prefer,
        [n for n in present if n not in prefer],
        [k.name for k in CATALOGUE if k.name not in present],
    ):
        names = [n for n in group if n not in exclude and n not in pool]
        pool.extend(names[int(i)] for i in rng.permutation(len(names)))
    return [_the(n) for n in pool[:4]]


def _picks(script: Script) -> list[Event]:
    return [e for e in script.events if e.action == "pick_up"]


def _first_last(script: Script, rng: np.random.Generator) -> list[QADraft]:
    picks = _picks(script)
    out: list[QADraft] = []
    if not picks:
        return out
    picked = list(dict.fromkeys(e.object for e in picks))
    first = picks[0]
    out.append(
        QADraft(
            "first_pickup",
            "Which object did the wearer pick up first?",
            _the(first.object),
            _object_distractors(script, {first.object}, picked, rng),
            [first.t],
        )
    )
    last = picks[-1]
    if len(picked) >= 2:
        out.append(
            QADraft(
                "last_pickup",
                "Which object did the wearer pick up last?",
                _the(last.object),
                _object_distractors(script, {last.object}, picked, rng),
                [last.t],
            )
        )
    return out


def _never_touched(script: Script, rng: np.random.Generator) -> list[QADraft]:
    picks = _picks(script)
    first_pick: dict[str, float] = {}
    for e in picks:
        first_pick.setdefault(e.object, e.t)
    untouched = [o.name for o in script.objects if o.name not in first_pick]
    if not untouched or len(first_pick) < 4:
        return []
    answer = untouched[int(rng.integers(len(untouched)))]
    touched = list(first_pick)
    chosen = [touched[int(i)] for i in rng.permutation(len(touched))[:4]]
    return [
        QADraft(
            "never_touched",
            "Which of these objects did the wearer never touch?",
            _the(answer),
            [_the(n) for n in chosen],
            sorted(first_pick[n] for n in chosen),
        )
    ]


def _order(script: Script, rng: np.random.Generator) -> list[QADraft]:
    """Which statement about two objects' pick-ups is true (before / after / only one)."""
    first_pick: dict[str, float] = {}
    n_picks: Counter[str] = Counter()
    for e in _picks(script):
        first_pick.setdefault(e.object, e.t)
        n_picks[e.object] += 1
    picked = list(first_pick)
    once = [n for n in picked if n_picks[n] == 1]  # "before" is only unambiguous for single pick-ups
    others = [o.name for o in script.objects if o.name not in first_pick]
    if len(once) >= 2 and (not others or rng.random() < 0.7):
        i, j = (int(v) for v in rng.permutation(len(once))[:2])
        x, y = once[i], once[j]
    elif picked and others:
        x, y = picked[int(rng.integers(len(picked)))], others[int(rng.integers(len(others)))]
        if rng.random() < 0.5:
            x, y = y, x
    else:
        return []
    statements = {
        "x_first": f"The {x} was picked up before the {y}.",
        "y_first": f"The {y} was picked up before the {x}.",
        "only_x": f"Only the {x} was picked up; the {y} was never picked up.",
        "only_y": f"Only the {y} was picked up; the {x} was never picked up.",
        "neither": f"Neither the {x} nor the {y} was picked up.",
    }
    tx, ty = first_pick.get(x), first_pick.get(y)
    if tx is not None and ty is not None:
        truth = "x_first" if tx < ty else "y_first"
    else:
        truth = "only_x" if tx is not None else "only_y"
    times = sorted(t for t in (tx, ty) if t is not None)
    return [
        QADraft(
            "order",
            f"Which statement about the {x} and the {y} is true?",
            statements[truth],
            [s for k, s in statements.items() if k != truth],
            times,
            meta={"variant": "pair"},
        )
    ]


def _action_text(e: Event) -> str:
    if e.action == "pick_up":
        return f"picked up the {e.object}"
    return f"put the {e.object} {PLACE_BY_NAME[e.place].to}"


def _next_action(script: Script, rng: np.random.Generator) -> list[QADraft]:
    """What the wearer did right after picking up an object (the very next event)."""
    events = script.events
    n_picks = Counter(e.object for e in events if e.action == "pick_up")
    idx = [
        i
        for i, e in enumerate(events)
        if e.action == "pick_up" and i + 1 < len(events) and n_picks[e.object] == 1
    ]
    if not idx:
        return []
    i = idx[int(rng.integers(len(idx)))]
    cur, nxt = events[i], events[i + 1]
    correct = _action_text(nxt)
    pool: list[str] = []
    names = [o.name for o in script.objects]
    for name in (names[int(k)] for k in rng.permutation(len(names))):
        if name != cur.object:
            pool.append(f"picked up the {name}")
    for place in (PLACES[int(k)] for k in rng.permutation(len(PLACES))):
        fake = Event(
            0,
            0.0,
            0,
            "put_down",
            nxt.object if nxt.action == "put_down" else cur.object,
            place.name,
            "",
            0.0,
            0.0,
            (),
        )
        pool.append(_action_text(fake))
    pool = [p for p in dict.fromkeys(pool) if p != correct]
    pool = [pool[int(k)] for k in rng.permutation(len(pool))]
    # keep a mix: at least one wrong place for the object just picked, when possible
    puts = [p for p in pool if p.startswith("put")][:2]
    distractors = puts + [p for p in pool if p not in puts][: 4 - len(puts)]
    return [
        QADraft(
            "order",
            f"What did the wearer do right after picking up the {cur.object}?",
            correct,
            distractors,
            [cur.t, nxt.t],
            meta={"variant": "next_action"},
        )
    ]


def place_phrase(name: str) -> str:
    """How an option names a place: "On the shelf."."""
    return PLACE_BY_NAME[name].at.capitalize() + "."


def wrong_places(place: str, used: Set[str], rng: np.random.Generator) -> list[str]:
    """Four wrong places for an object that ended at ``place``, as option phrases: places the clip
    uses (``used``) before the others, in random order within each group (one ``rng.random()`` per
    other place, in :data:`PLACES` order)."""
    others = [p for p in PLACES if p.name != place]
    others.sort(key=lambda p: (p.name not in used, float(rng.random())))
    return [place_phrase(p.name) for p in others[:4]]


def _where_ended(script: Script, rng: np.random.Generator) -> list[QADraft]:
    last_put: dict[str, Event] = {}
    for e in script.events:
        if e.action == "put_down":
            last_put[e.object] = e
    if not last_put:
        return []
    names = list(last_put)
    name = names[int(rng.integers(len(names)))]
    ev = last_put[name]
    final = PLACE_BY_NAME[script.final_place(script.obj_by_name(name).id)]
    assert final.name == ev.place
    used = {e.place for e in script.events}
    return [
        QADraft(
            "where_ended",
            f"Where did the {name} end up?",
            place_phrase(final.name),
            wrong_places(final.name, used, rng),
            [ev.t],
        )
    ]


def _count(script: Script, rng: np.random.Generator) -> list[QADraft]:
    picks = _picks(script)
    if not picks:
        return []
    variant = ["total", "object", "place"][int(rng.integers(3))]
    if variant == "object":
        names = list(dict.fromkeys(e.object for e in picks))
        name = names[int(rng.integers(len(names)))]
        hits = [e for e in picks if e.object == name]
        question = f"How many times did the wearer pick up the {name}?"
    elif variant == "place":
        puts = [e for e in script.events if e.action == "put_down"]
        places = list(dict.fromkeys(e.place for e in puts))
        place = PLACE_BY_NAME[places[int(rng.integers(len(places)))]]
        hits = [e for e in puts if e.place == place.name]
        question = f"How many times did the wearer put something down {place.at}?"
    else:
        hits = picks
        question = "How many times did the wearer pick something up?"
    return [
        QADraft(
            "count",
            question,
            str(len(hits)),
            [],
            [e.t for e in hits],
            meta={"variant": variant},
            numeric=len(hits),
        )
    ]


def _overall(script: Script, rng: np.random.Generator) -> list[QADraft]:
    if not script.events:
        return []
    others = [a.description for a in ACTIVITIES if a.name != script.activity.name]
    chosen = [others[int(i)] for i in rng.permutation(len(others))[:4]]
    return [
        QADraft(
            "overall",
            "What was the wearer doing overall in this video?",
            script.activity.description.capitalize() + ".",
            [c.capitalize() + "." for c in chosen],
            [e.t for e in script.events],
        )
    ]


BUILDERS = (_first_last, _never_touched, _order, _next_action, _where_ended, _count, _overall)


def make_drafts(script: Script, rng: np.random.Generator) -> list[QADraft]:
    """Every question type the clip supports (a clip with no events gets none)."""
    drafts: list[QADraft] = []
    for build in BUILDERS:
        drafts.extend(build(script, rng))
    return drafts


def assign_letters(drafts: list[tuple[QADraft, dict[str, Any]]], rng: np.random.Generator) -> list[QAItem]:
    """Turn drafts into schema rows; each block of five consecutive questions uses A-E once.

    ``drafts`` pairs each draft with the row fields it needs (id, video, duration_s, meta).
    """
    items: list[QAItem] = []
    perm = np.zeros(0, dtype=int)
    for k, (draft, row) in enumerate(drafts):
        if k % 5 == 0:
            perm = _block_permutation([d for d, _ in drafts[k : k + 5]], rng)
        slot = int(perm[k % 5])
        options = _options(draft, slot, rng)
        answer = next(letter for letter, text in options.items() if text == draft.correct)
        items.append(_item(draft, row, options, answer))
    return items


def _item(
    draft: QADraft, row: dict[str, Any], options: dict[str, str] | None, answer: str, id_suffix: str = ""
) -> QAItem:
    """The schema row of a draft, multiple-choice (``options``) or open (None, ``answer`` the words)."""
    return QAItem(
        id=row["id"] + id_suffix,
        video=row["video"],
        question=draft.question,
        options=options,
        answer=answer,
        salient_times=[round(t, 6) for t in draft.salient_times],
        duration_s=row["duration_s"],
        question_type=draft.question_type,
        source=SOURCE,
        meta={**row["meta"], **draft.meta},
    )


def _block_permutation(block: list[QADraft], rng: np.random.Generator) -> np.ndarray:
    """A permutation of the five letters for a block, such that every count question can put its
    answer on its letter (a count of 1 cannot sit on E when options list 0..4 in order)."""
    perm = rng.permutation(5)
    for _ in range(200):
        if all(d.numeric is None or d.numeric >= int(perm[i]) for i, d in enumerate(block)):
            return perm
        perm = rng.permutation(5)
    return perm


def count_options(numeric: int, slot: int) -> list[str]:
    """The five options of a count question: consecutive counts in ascending order, the window placed
    so the answer ``numeric`` lands on position ``slot`` (0-based; lower when it would go below 0)."""
    start = max(0, numeric - slot)
    return [str(start + i) for i in range(5)]


def _options(draft: QADraft, slot: int, rng: np.random.Generator) -> dict[str, str]:
    if draft.numeric is not None:
        return dict(zip(OPTION_LETTERS, count_options(draft.numeric, slot), strict=False))
    wrong = [draft.distractors[int(i)] for i in rng.permutation(4)]
    texts = [*wrong[:slot], draft.correct, *wrong[slot:]]
    return dict(zip(OPTION_LETTERS, texts, strict=False))


def open_items(drafts: list[tuple[QADraft, dict[str, Any]]]) -> list[QAItem]:
    """Open rows (``options`` None, ``answer`` the words) for the drafts of :data:`OPEN_TYPES`.

    ``drafts`` is what :func:`assign_letters` takes; the ids are the multiple-choice rows' ids plus
    :data:`OPEN_ID_SUFFIX`, so both forms can sit in one dataset."""
    return [
        _item(draft, row, None, draft.correct, OPEN_ID_SUFFIX)
        for draft, row in drafts
        if draft.question_type in OPEN_TYPES
    ]
