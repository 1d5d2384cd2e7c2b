"""The base stage's data: B-type questions in the exact prompt eval uses, with answer-only targets.

Every question is rendered by the contract itself (:func:`egovlm.contract.build_messages`: the same
system prompt, frame layout and question block ``egovlm eval`` sends), so what the base learns is
measured in the prompt it answers in (docs/mini_experiment/REDESIGN.md §1). The target is
answer-only::

    <think></think>
    <keyframes>2, 5</keyframes>
    <answer>the yellow banana</answer>

``<keyframes>`` holds the prompt frames nearest the moments the answer rests on (the nearest-frame
salient set of :func:`egovlm.train.rewards.salient_frame_indices`, as the keyframe reward defines
it); ``<answer>`` holds the correct option's text (``answer_form: text``) or its letter
(``answer_form: letter``), and an open question's words. Both parse with
:func:`egovlm.contract.parse_answer` to the gold answer.

Question types (:data:`BASE_TYPES`, REDESIGN.md §2 "Proposed split"):

* ``hand``, ``visible``, ``place`` — read off one frame (:mod:`experiments.mini.pretrain_perception`);
* ``start_place`` — where an object that is later picked up was at the start (the place of its
  first pick-up), with the QA's place phrases ("On the shelf.");
* ``picked_up`` — which of five objects the wearer picked up (the other four never were);
* ``first_pickup``, ``count``, ``overall`` — :mod:`egovlm.synth.qa`'s own builders, their options
  lettered afresh for every example;
* ``statement`` — which of five statements about the clip's pick-ups is true ("The wearer never
  picked up the cup.", "The banana was picked up first."): options that are whole sentences, as the
  held-out order questions' are, about facts the other base types teach;
* open forms (no options, answer in words) of :data:`OPEN_FORMS`.

Any question can be asked in other words (:func:`reword`, ``reword_share`` of them): a few
paraphrases per template, first-person ones among them ("What did I pick up first?"); and a
multiple-choice question's options can be written in another style (:func:`restyle`,
``restyle_share``): all five options rewritten alike ("the yellow banana" → "Yellow banana", "On the
shelf." → "It was on the shelf.", "2" → "two", "The wearer picked up the cup." → "The cup was picked
up."), the target the restyled option's exact words. A base that must write whichever words the
options use learns to copy its answer from them, the skill a question template it never saw needs.

The GRPO types (:data:`GRPO_TYPES`: last pick-up, where something ended up, order) are held out
of the base: no generator here produces them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlm.contract import Message, build_messages, format_answer
from egovlm.frames import Frame
from egovlm.schema import OPTION_LETTERS, QAItem
from egovlm.synth.qa import count_options, make_drafts, place_phrase, wrong_places
from egovlm.train.rewards import salient_frame_indices
from experiments.mini.pretrain_data import (
    ClipTruth,
    Example,
    PretrainDataError,
    clip_places,
    decode_frame_sets,
    draw_blocks,
    load_truth,
    planned_script,
    target_text,
)
from experiments.mini.pretrain_perception import (
    Question,
    distractors,
    hand_question,
    lettered,
    place_question,
    the,
    visible_question,
)

FRAME_TYPES: tuple[str, ...] = ("hand", "visible", "place")  # answerable from a single frame
QA_TYPES: tuple[str, ...] = ("first_pickup", "count", "overall")  # from egovlm.synth.qa's builders
BASE_TYPES: tuple[str, ...] = (*FRAME_TYPES, "start_place", "picked_up", *QA_TYPES, "statement")
OPEN_FORMS: tuple[str, ...] = ("hand", "start_place", "first_pickup")
GRPO_TYPES: tuple[str, ...] = ("last_pickup", "where_ended", "order", "never_touched")
# Development types, in no committed phase: ``put_down`` ("How many times did the wearer put the cup
# down?") cites an object's put-downs, the moment the held-out where-ended rests on, with a count
# for its answer (never a place), so the base learns to cite that event without the held-out answers.
DEV_TYPES: tuple[str, ...] = ("put_down",)
KINDS: tuple[str, ...] = (*BASE_TYPES, *DEV_TYPES)  # every type a phase may list
ANSWER_FORMS: tuple[str, ...] = ("text", "letter")


@dataclass
class QAExample:
    """A question about one frame set, in the contract's prompt, with its answer-only target."""

    clip_id: str
    question: Question
    frames: list[Frame]
    target: str

    @property
    def kind(self) -> str:
        return self.question.kind

    def prompt(self) -> list[Message]:
        return build_messages(self.frames, self.question.question, self.question.options)


def keyframes_for(question: Question, frames: Sequence[Frame]) -> list[int]:
    """The prompt frames nearest each moment the answer rests on (ties keep both)."""
    return salient_frame_indices([f.timestamp_s for f in frames], question.salient_times, None)


def answer_target(question: Question, frames: Sequence[Frame], answer_form: str = "text") -> str:
    """The answer-only target: empty think, the salient frames, the answer (module docstring)."""
    if answer_form not in ANSWER_FORMS:
        raise PretrainDataError(
            f"unknown answer form {answer_form!r}; choose one of {', '.join(ANSWER_FORMS)}"
        )
    body = question.answer if answer_form == "letter" and not question.is_open else question.answer_text
    return format_answer("", keyframes_for(question, frames), body)


def _picks(clip: ClipTruth) -> list[dict[str, Any]]:
    return [e for e in clip.events if e["action"] == "pick_up"]


def _first_picks(clip: ClipTruth) -> dict[str, float]:
    """The time of each picked-up object's first pick-up, in the order of those first pick-ups."""
    first: dict[str, float] = {}
    for e in _picks(clip):
        first.setdefault(str(e["object"]), float(e["t"]))
    return first


# What a start-place question's target cites (its salient moment), per base phase (data.start_cites):
# "first_frame": frame 1, which shows every object at its start place (phases 1-4); "pickup": the
# moment the object leaves that place, its first pick-up (phase 5). Why the second: with frame 1 the
# base learnt that "where" means frame 1, and carried it to the held-out "where did X end up?" (every
# sample cited frame 1, so the keyframe reward had nothing to compare; docs/mini_experiment/LOG.md).
START_CITES: tuple[str, ...] = ("first_frame", "pickup")


def start_place_question(
    clip: ClipTruth, rng: np.random.Generator, open_form: bool = False, cites: str = "first_frame"
) -> Question | None:
    """Where an object the wearer picks up was at the start: the place of its first pick-up (None:
    nothing is picked up). Wrong options prefer places the clip uses, as the QA's where_ended does.
    ``cites``: the moment the target cites (:data:`START_CITES`)."""
    if cites not in START_CITES:
        raise PretrainDataError(
            f"start-place citations must be one of {', '.join(START_CITES)}, not {cites!r}"
        )
    first: dict[str, dict[str, Any]] = {}
    for e in _picks(clip):
        first.setdefault(str(e["object"]), e)
    if not first:
        return None
    names = list(first)
    name = names[int(rng.integers(len(names)))]
    place = str(first[name]["place"])
    question = f"Where was the {name} at the start?"
    correct = place_phrase(place)
    when = [0.0] if cites == "first_frame" else [float(first[name]["t"])]
    if open_form:
        return Question(clip.clip_id, "start_place", question, None, correct, when)
    options, letter = lettered(correct, wrong_places(place, clip_places(clip), rng), rng)
    return Question(clip.clip_id, "start_place", question, options, letter, when)


def put_down_question(clip: ClipTruth, rng: np.random.Generator) -> Question | None:
    """How many times the wearer put an object down (one that was put down at least once), citing
    each of those put-downs; options as a count question's. None: nothing is put down."""
    puts: dict[str, list[float]] = {}
    for e in clip.events:
        if e["action"] == "put_down":
            puts.setdefault(str(e["object"]), []).append(float(e["t"]))
    if not puts:
        return None
    names = list(puts)
    name = names[int(rng.integers(len(names)))]
    options, letter = count_lettered(len(puts[name]), rng)
    question = f"How many times did the wearer put the {name} down?"
    return Question(clip.clip_id, "put_down", question, options, letter, puts[name])


def count_lettered(n: int, rng: np.random.Generator) -> tuple[dict[str, str], str]:
    """A count question's options (consecutive counts, ascending) and the letter of ``n``, placed on
    a random letter it can occupy (a count below the window's start cannot move it down)."""
    slot = int(rng.integers(min(len(OPTION_LETTERS) - 1, n) + 1))
    return dict(zip(OPTION_LETTERS, count_options(n, slot), strict=True)), OPTION_LETTERS[slot]


def picked_up_question(clip: ClipTruth, rng: np.random.Generator) -> Question | None:
    """Which of five objects the wearer picked up: one that was, four that never were (the clip's
    untouched objects first, then kinds absent from the scene). None: nothing is picked up."""
    first = _first_picks(clip)
    if not first:
        return None
    names = list(first)
    name = names[int(rng.integers(len(names)))]
    wrong = [the(n) for n in distractors(clip, set(first), 4, rng)]
    options, letter = lettered(the(name), wrong, rng)
    question = "Which of these objects did the wearer pick up?"
    return Question(clip.clip_id, "picked_up", question, options, letter, [first[name]])


def statement_question(clip: ClipTruth, rng: np.random.Generator) -> Question | None:
    """Which of five statements about the clip's pick-ups is true. The true one says that an object
    was picked up, that one never was, or which was picked up first; the four false ones are drawn
    from all three forms, so no sentence shape gives the answer away. None: nothing is picked up."""
    first = _first_picks(clip)
    if not first:
        return None
    picked = list(first)
    never = distractors(clip, set(picked), 4, rng)
    head = picked[0]
    true = [(f"The wearer picked up the {n}.", [first[n]]) for n in picked]
    true += [(f"The wearer never picked up the {n}.", sorted(first.values())) for n in never]
    true += [(f"The {head} was picked up first.", [first[head]])]
    false = [f"The wearer picked up the {n}." for n in never]
    false += [f"The wearer never picked up the {n}." for n in picked]
    false += [f"The {n} was picked up first." for n in [*picked[1:], *never]]
    correct, times = true[int(rng.integers(len(true)))]
    wrong = [false[int(i)] for i in rng.permutation(len(false))[:4]]
    options, letter = lettered(correct, wrong, rng)
    question = "Which statement about the video is true?"
    return Question(clip.clip_id, "statement", question, options, letter, times)


# Paraphrases of every base question template (the canonical wording first, as a pattern; its groups
# fill the alternatives). None of them uses the held-out types' words (last, end up, before, after).
REWORDINGS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), alternatives)
    for pattern, alternatives in (
        (
            r"Which object does the (\w+) hand hold in frame (\d+)\?",
            (
                "What is in the wearer's {0} hand in frame {1}?",
                "In frame {1}, what does my {0} hand hold?",
                "What is the {0} hand holding in frame {1}?",
            ),
        ),
        (
            r"Which of these objects can be seen in frame (\d+)\?",
            (
                "Which object appears in frame {0}?",
                "In frame {0}, which of these can I see?",
                "What is visible in frame {0}?",
            ),
        ),
        (
            r"Where is the (.+) in frame (\d+)\?",
            (
                "In frame {1}, where is the {0}?",
                "Where can the {0} be seen in frame {1}?",
                "Where is the {0} lying in frame {1}?",
            ),
        ),
        (
            r"Where was the (.+) at the start\?",
            (
                "Where was the {0} when the wearer picked it up?",
                "Where did the wearer pick up the {0} from?",
                "Where did I find the {0}?",
                "At the start, where was the {0}?",
            ),
        ),
        (
            r"How many times did the wearer put the (.+) down\?",
            (
                "How often did I put the {0} down?",
                "How many times was the {0} put down?",
                "How many times did the wearer set the {0} down?",
            ),
        ),
        (
            r"Which of these objects did the wearer pick up\?",
            (
                "Which of these did I pick up?",
                "Which object was picked up?",
                "Which of these objects did the wearer take?",
            ),
        ),
        (
            r"Which object did the wearer pick up first\?",
            (
                "What did I pick up first?",
                "What was the first object the wearer picked up?",
                "Which object was picked up first?",
                "What did the wearer take first?",
            ),
        ),
        (
            r"How many times did the wearer pick up the (.+)\?",
            (
                "How often did I pick up the {0}?",
                "How many times was the {0} picked up?",
                "How often did the wearer take the {0}?",
            ),
        ),
        (
            r"How many times did the wearer put something down (.+)\?",
            ("How often did I put something down {0}?", "How many times was something put down {0}?"),
        ),
        (
            r"How many times did the wearer pick something up\?",
            (
                "How many pick-ups are there?",
                "How often did I pick something up?",
                "How many times was something picked up?",
            ),
        ),
        (
            r"What was the wearer doing overall in this video\?",
            (
                "What was I doing?",
                "Which activity does the video show?",
                "What is the wearer busy with in this video?",
            ),
        ),
        (
            r"Which statement about the video is true\?",
            ("Which of these is true?", "Which sentence is correct?", "What is true about this video?"),
        ),
    )
)


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_PLACE = re.compile(r"(On|In) (.+)\.")
_STATEMENTS = (  # (pattern, the same fact in other words); the groups are object names
    (
        re.compile(r"The wearer never picked up the (.+)\."),
        ("I never picked up the {0}.", "The {0} was never picked up.", "Nobody picked up the {0}."),
    ),
    (
        re.compile(r"The wearer picked up the (.+)\."),
        ("I picked up the {0}.", "The {0} was picked up.", "The wearer took the {0}."),
    ),
    (
        re.compile(r"The (.+) was picked up first\."),
        (
            "I picked up the {0} first.",
            "The first object picked up was the {0}.",
            "First the {0} was picked up.",
        ),
    ),
)


# Each option kind's forms: (the canonical text, its other styles); restyle picks one other style.
def _object_forms(text: str) -> tuple[str, ...]:
    return (text, text.removeprefix("the ").capitalize(), f"It was {text}.")


def _place_forms(text: str) -> tuple[str, ...]:
    m = _PLACE.fullmatch(text)
    if m is None:
        raise PretrainDataError(f"not a place option: {text!r}")
    prep, where = m.groups()
    return (text, f"{prep.lower()} {where}", f"It was {prep.lower()} {where}.")


def _count_forms(text: str) -> tuple[str, ...]:
    n = int(text)
    return (text, NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else f"{n} in all", f"{n} times")


def _activity_forms(text: str) -> tuple[str, ...]:
    lowered = text[0].lower() + text[1:]
    return (text, lowered.rstrip("."), f"The wearer was {lowered}")


def _alternatives(table: Sequence[tuple[re.Pattern[str], tuple[str, ...]]], text: str) -> list[str] | None:
    """``text`` in the other words of the first pattern of ``table`` it matches in full, their
    ``{0}``, ``{1}`` filled with its groups (None: no pattern matches)."""
    for pattern, alternatives in table:
        m = pattern.fullmatch(text)
        if m:
            return [a.format(*m.groups()) for a in alternatives]
    return None


def _statement_forms(text: str) -> tuple[str, ...]:
    others = _alternatives(_STATEMENTS, text)
    if others is None:
        raise PretrainDataError(f"not a statement option: {text!r}")
    return (text, *others)


_FORMS: dict[str, Callable[[str], tuple[str, ...]]] = {
    "hand": _object_forms,
    "visible": _object_forms,
    "picked_up": _object_forms,
    "first_pickup": _object_forms,
    "start_place": _place_forms,
    "place": _place_forms,
    "count": _count_forms,
    "put_down": _count_forms,
    "overall": _activity_forms,
    "statement": _statement_forms,
}


def restyle(question: Question, rng: np.random.Generator) -> Question:
    """A multiple-choice question with all five options written in one other style (module
    docstring), drawn uniformly among the kind's other styles: the same facts, the same letters,
    words the target must copy. Open questions are returned as they are."""
    if question.options is None:
        return question
    forms = _FORMS.get(question.kind)
    if forms is None:
        raise PretrainDataError(f"{question.kind}: no option styles")
    written = {k: forms(v) for k, v in question.options.items()}
    style = 1 + int(rng.integers(min(len(f) for f in written.values()) - 1))
    options = {k: f[style] for k, f in written.items()}
    if len(set(options.values())) != len(options):
        return question  # a style that merges two options is not used
    return dataclasses.replace(question, options=options)


def reword(question: Question, rng: np.random.Generator) -> Question:
    """The same question (options, answer, moments) in one of its template's other wordings
    (:data:`REWORDINGS`); a question no template matches is an error, so a new template cannot
    silently miss its paraphrases."""
    others = _alternatives(REWORDINGS, question.question)
    if others is None:
        raise PretrainDataError(f"{question.kind}: no rewording for the question {question.question!r}")
    return dataclasses.replace(question, question=others[int(rng.integers(len(others)))])


def qa_questions(
    clip: ClipTruth, rng: np.random.Generator, kind: str, open_form: bool = False
) -> list[Question]:
    """The question(s) of ``kind`` (one of :data:`QA_TYPES`) that :func:`egovlm.synth.qa.make_drafts`
    builds for the clip, options lettered afresh (counts keep their ascending order, the window
    placed so the answer lands on a random letter it can occupy)."""
    if kind not in QA_TYPES:
        raise PretrainDataError(f"{kind!r} is not a base-stage QA type ({', '.join(QA_TYPES)})")
    script = planned_script(clip)
    out = []
    for d in make_drafts(script, rng):
        if d.question_type != kind:
            continue
        times = [float(t) for t in d.salient_times]
        if open_form:
            out.append(Question(clip.clip_id, kind, d.question, None, d.correct, times))
            continue
        if d.numeric is not None:
            options, letter = count_lettered(d.numeric, rng)
        else:
            options, letter = lettered(d.correct, d.distractors, rng)
        out.append(Question(clip.clip_id, kind, d.question, options, letter, times))
    return out


def make_question(
    clip: ClipTruth,
    frames: Sequence[Frame],
    kind: str,
    rng: np.random.Generator,
    open_form: bool = False,
    start_cites: str = "first_frame",
) -> Question | None:
    """One question of ``kind`` about a frame set (None: the clip cannot support it);
    ``start_cites`` as :func:`start_place_question`'s ``cites``."""
    if open_form and kind not in OPEN_FORMS:
        raise PretrainDataError(f"{kind!r} has no open form (open forms: {', '.join(OPEN_FORMS)})")
    if kind == "hand":
        return hand_question(clip, frames, rng, open_form)
    if kind == "visible":
        return visible_question(clip, frames, rng)
    if kind == "place":
        return place_question(clip, frames, rng)
    if kind == "start_place":
        return start_place_question(clip, rng, open_form, start_cites)
    if kind == "picked_up":
        return picked_up_question(clip, rng)
    if kind == "statement":
        return statement_question(clip, rng)
    if kind == "put_down":
        return put_down_question(clip, rng)
    if kind in QA_TYPES:
        found = qa_questions(clip, rng, kind, open_form)
        return found[int(rng.integers(len(found)))] if found else None
    raise PretrainDataError(f"unknown base question type {kind!r}; choose from {', '.join(KINDS)}")


def check_kinds(kinds: Sequence[str], frames: int) -> None:
    """Known types only (base and development), and single-frame types only for single-frame prompts."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise PretrainDataError(f"unknown base question type(s) {unknown}; choose from {', '.join(KINDS)}")
    if frames < 2 and any(k not in FRAME_TYPES for k in kinds):
        raise PretrainDataError(
            f"a single-frame prompt can only ask {', '.join(FRAME_TYPES)}, not {list(kinds)}"
        )


def draw_questions(
    clip: ClipTruth,
    frames: Sequence[Frame],
    count: int,
    rng: np.random.Generator,
    kinds: Sequence[str] = BASE_TYPES,
    open_share: float = 0.0,
    reword_share: float = 0.0,
    restyle_share: float = 0.0,
    start_cites: str = "first_frame",
) -> list[Question]:
    """``count`` questions about a frame set: kinds uniform over ``kinds``, each of an
    :data:`OPEN_FORMS` kind asked open with probability ``open_share`` and in other words
    (:func:`reword`) with probability ``reword_share``, its options in another style
    (:func:`restyle`) with probability ``restyle_share``; a kind the clip cannot support (nothing
    picked up, nothing visible) is redrawn, up to a bound."""
    out: list[Question] = []
    for _ in range(count * 4):
        if len(out) == count:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        open_form = kind in OPEN_FORMS and float(rng.random()) < open_share
        q = make_question(clip, frames, kind, rng, open_form, start_cites)
        if q is None:
            continue
        if reword_share and float(rng.random()) < reword_share:
            q = reword(q, rng)
        if restyle_share and float(rng.random()) < restyle_share:
            q = restyle(q, rng)
        out.append(q)
    return out


def build_base_examples(
    folder: Path,
    n_frames: int,
    frame_sets: int,
    size: tuple[int, int],
    seed: int,
    qa_per_set: int,
    kinds: Sequence[str] = BASE_TYPES,
    open_share: float = 0.0,
    answer_form: str = "text",
    describe_per_set: int = 0,
    tasks: Sequence[str] | None = None,
    max_clips: int | None = None,
    reword_share: float = 0.0,
    restyle_share: float = 0.0,
    start_cites: str = "first_frame",
) -> list[QAExample | Example]:
    """For every clip of an EgoSynth folder and each of its ``frame_sets`` frame sets (the uniform
    one, then jittered ones): ``qa_per_set`` questions (:func:`draw_questions`) with answer-only
    targets, and ``describe_per_set`` descriptions (:mod:`experiments.mini.pretrain_data`)."""
    from experiments.mini.pretrain_data import TASKS

    check_kinds(kinds, n_frames)
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise PretrainDataError(f"unknown description task(s) {unknown}; choose from {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    clips = load_truth(folder)[:max_clips] if max_clips else load_truth(folder)
    examples: list[QAExample | Example] = []
    for clip in clips:
        for frames in decode_frame_sets(clip, n_frames, frame_sets, size, rng):
            for q in draw_questions(
                clip, frames, qa_per_set, rng, kinds, open_share, reword_share, restyle_share, start_cites
            ):
                examples.append(QAExample(clip.clip_id, q, frames, answer_target(q, frames, answer_form)))
            for _ in range(describe_per_set):
                blocks = draw_blocks(rng, tasks)
                examples.append(Example(clip.clip_id, blocks, frames, target_text(clip, frames, blocks)))
    return examples


def val_questions(
    folder: Path,
    n_frames: int,
    size: tuple[int, int],
    seed: int,
    kinds: Sequence[str] = BASE_TYPES,
    max_clips: int | None = None,
    answer_form: str = "text",
    start_cites: str = "first_frame",
) -> list[QAExample]:
    """Held-out questions on each clip's uniform frame set (the one ``egovlm eval`` samples): one
    multiple-choice question of every kind the clip supports, and the open form of each
    :data:`OPEN_FORMS` kind among ``kinds``."""
    check_kinds(kinds, n_frames)
    rng = np.random.default_rng(seed)
    clips = load_truth(folder)[:max_clips] if max_clips else load_truth(folder)
    out: list[QAExample] = []
    for clip in clips:
        frames = decode_frame_sets(clip, n_frames, 1, size, rng)[0]
        asked = [(k, False) for k in kinds] + [(k, True) for k in kinds if k in OPEN_FORMS]
        for kind, open_form in asked:
            q = make_question(clip, frames, kind, rng, open_form, start_cites)
            if q is not None:
                out.append(QAExample(clip.clip_id, q, frames, answer_target(q, frames, answer_form)))
    return out


def grpo_questions(
    folder: Path,
    n_frames: int,
    size: tuple[int, int],
    limit: int,
    decoded: Mapping[str, list[Frame]] | None = None,
) -> list[QAExample]:
    """Up to ``limit`` of the folder's own QA rows (``qa.jsonl``) of the GRPO types, on each clip's
    uniform frames: how far the base already gets on the questions it never trained on.
    ``decoded``: uniform frame sets already decoded by clip id (e.g. :func:`val_questions`'), reused."""
    from egovlm.schema import read_jsonl

    if limit <= 0 or not (folder / "qa.jsonl").is_file():
        return []
    clips = {c.video.name: c for c in load_truth(folder)}
    rng = np.random.default_rng(0)
    frames_of: dict[str, list[Frame]] = dict(decoded or {})
    out: list[QAExample] = []
    for item in read_jsonl(folder / "qa.jsonl"):
        if item.question_type not in GRPO_TYPES or not item.video or item.answer is None:
            continue
        clip = clips.get(Path(item.video).name)
        if clip is None:
            continue
        if clip.clip_id not in frames_of:
            frames_of[clip.clip_id] = decode_frame_sets(clip, n_frames, 1, size, rng)[0]
        frames = frames_of[clip.clip_id]
        q = Question(
            clip.clip_id,
            str(item.question_type),
            item.question,
            item.options,
            item.answer,
            list(item.salient_times or []),
        )
        out.append(QAExample(clip.clip_id, q, frames, answer_target(q, frames)))
        if len(out) == limit:
            break
    return out


def base_qa(folder: Path, frames: int, seed: int, kinds: Sequence[str] = BASE_TYPES) -> list[QAItem]:
    """:func:`val_questions` as dataset rows, for ``egovlm eval`` of a base model on its own types
    (``size`` does not matter: the rows hold no frames)."""
    clips = {c.clip_id: c for c in load_truth(folder)}
    items = []
    for k, ex in enumerate(val_questions(folder, frames, (112, 84), seed, kinds)):
        suffix = "-open" if ex.question.is_open else ""
        items.append(ex.question.to_item(clips[ex.clip_id], f"{ex.clip_id}-base{k:03d}-{ex.kind}{suffix}"))
    return items
