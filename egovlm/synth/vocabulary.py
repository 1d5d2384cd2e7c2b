"""EgoSynth's words as sentences, for training the offline models' BPE tokenizer on them.

A model built with :func:`egosynth_vocabulary` as its tokenizer's extra corpus
(``egovlm model nano --corpus egosynth``) spells every catalogue name, place phrase and activity
as whole-word tokens, so an answer in words ("the silver spoon") is a few tokens that a small
model can copy, not a string of letter fragments. Everything is read from the catalogue, the
places, the activities and the QA builders themselves, so a new object or question is covered
without editing this module.
"""

from __future__ import annotations

import numpy as np

from egovlm.contract import format_answer
from egovlm.synth.objects import CATALOGUE
from egovlm.synth.qa import make_drafts
from egovlm.synth.scene import PLACES
from egovlm.synth.script import ACTIVITIES, plan_clip

QUESTION_CLIPS = 24  # planned (never rendered) clips whose questions sample every QA template
_CLIP_SECONDS, _CLIP_FPS = 30.0, 10.0


def egosynth_vocabulary(question_clips: int = QUESTION_CLIPS) -> list[str]:
    """EgoSynth's vocabulary sentences, deduplicated, in a fixed order (deterministic).

    Each name appears in the three positions a byte-level BPE tells apart: at the start of a text
    (an ``<answer>`` body), after a space ("the red cup") and capitalised ("The red cup."). Then
    the place phrases, the activity descriptions, the questions and options :mod:`egovlm.synth.qa`
    writes for ``question_clips`` planned clips, and answers in the contract's grammar.
    """
    out: list[str] = []
    for kind in CATALOGUE:
        out += [kind.name, f"the {kind.name}", f"The {kind.name}.", f"<answer>the {kind.name}</answer>"]
    for place in PLACES:
        out += [place.label, place.at, place.from_, place.to, place.at.capitalize() + "."]
    for activity in ACTIVITIES:
        out += [activity.description, activity.description.capitalize() + "."]
    for i in range(question_clips):
        rng = np.random.default_rng(i)
        script = plan_clip(rng, _CLIP_SECONDS, _CLIP_FPS, head_motion=False)
        for draft in make_drafts(script, rng):
            out += [draft.question, draft.correct, *draft.distractors]
            out.append(format_answer("", [1, 2], draft.correct))
    return list(dict.fromkeys(out))
