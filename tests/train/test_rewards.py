"""Rewards on hand-written completions, well-formed and malformed, through TRL's call signature."""

from __future__ import annotations

from typing import Any

import pytest

from egovlm.contract import format_answer
from egovlm.train.config import RewardsSection, RewardWeights
from egovlm.train.rewards import (
    AccuracyReward,
    FormatReward,
    KeyframeReward,
    LengthReward,
    build_rewards,
    completion_text,
    f1,
    salient_frame_indices,
    soft_overlong,
    tags_present,
)

GOOD = format_answer("the cup appears in frame 2", [2, 3], "B")
FRAME_TIMES = [0.5, 1.5, 2.5, 3.5]


def conv(text: str) -> list[dict[str, Any]]:
    """A completion as TRL passes it for conversational prompts."""
    return [{"role": "assistant", "content": text}]


def call(reward: Any, texts: list[str], **columns: Any) -> list[float | None]:
    n = len(texts)
    cols: dict[str, Any] = {"letters": ["ABCD"] * n, "answer": ["B"] * n}
    cols.update(columns)
    return reward(prompts=[[]] * n, completions=[conv(t) for t in texts], **cols)


def test_completion_text_accepts_every_trl_shape() -> None:
    assert completion_text("x") == "x"
    assert completion_text(conv("y")) == "y"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "z"}]}]) == "z"
    assert completion_text([]) == ""


def test_format_exact_grammar_pays_one_and_case_whitespace_are_tolerated() -> None:
    messy_but_valid = "  <THINK> x </think>\n\n< keyframes > 1 ,3 </keyframes><answer> c </answer>\n"
    assert call(FormatReward(0.5), [GOOD, messy_but_valid]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # all three blocks valid, but extra text outside them: the full partial credit
        ("Sure! " + GOOD, 0.5),
        # blocks out of order
        ("<answer>B</answer><think>t</think><keyframes>1</keyframes>", 0.5),
        # only a valid answer block: 2 of 6 tags, 1 of 3 blocks
        ("<answer>B</answer>", 0.5 * (2 / 6 + 1 / 3) / 2),
        # a letter outside the option set: tags count, the answer block does not
        ("<think>t</think><keyframes>1</keyframes><answer>Z</answer>", 0.5 * (6 / 6 + 2 / 3) / 2),
        # keyframes not a list of integers
        ("<think>t</think><keyframes>the second</keyframes><answer>B</answer>", 0.5 * (6 / 6 + 2 / 3) / 2),
        # one stray opening tag
        ("<think> I will never close this", 0.5 * (1 / 6) / 2),
        # repeating a tag pays nothing more than having it once
        ("<think><think><think><think>", 0.5 * (1 / 6) / 2),
        ("", 0.0),
        ("B", 0.0),
    ],
)
def test_format_partial_credit(text: str, expected: float) -> None:
    assert call(FormatReward(0.5), [text])[0] == pytest.approx(expected)


def test_format_partial_credit_scales_and_never_reaches_exact() -> None:
    nearly = "Answer: " + GOOD
    assert call(FormatReward(0.0), [nearly]) == [0.0]
    assert call(FormatReward(1.0), [nearly])[0] == pytest.approx(1.0)  # the maximum a recipe may allow
    assert (call(FormatReward(0.5), [nearly])[0] or 0.0) < (call(FormatReward(0.5), [GOOD])[0] or 0.0)


def test_tags_present_counts_distinct_tags() -> None:
    assert tags_present(GOOD) == 6
    assert tags_present("</answer></answer>< Answer >") == 2


def test_format_logs_failure_rate() -> None:
    logged: list[tuple[str, float]] = []
    call(FormatReward(), [GOOD, "junk", "Sure! " + GOOD, GOOD], log_metric=lambda k, v: logged.append((k, v)))
    assert logged == [("format_failure_rate", 0.5)]


def test_accuracy_reads_the_letter_and_handles_missing_ground_truth() -> None:
    texts = [GOOD, GOOD.replace("<answer>B", "<answer>C"), "blah <answer> b </answer>", "no answer", GOOD]
    out = call(AccuracyReward(), texts, answer=["B", "B", "B", "B", None], letters=["ABCD"] * 5)
    assert out == [1.0, 0.0, 1.0, 0.0, None]


def test_accuracy_respects_the_rows_letter_set() -> None:
    text = GOOD.replace("<answer>B", "<answer>E")
    assert call(AccuracyReward(), [text], answer=["E"], letters=["ABCDE"]) == [1.0]
    assert call(AccuracyReward(), [text], answer=["E"], letters=["ABCD"]) == [0.0]


def test_f1() -> None:
    assert f1([2], [2]) == 1.0
    assert f1([1, 2], [2]) == pytest.approx(2 / 3)
    assert f1([2], [2, 3]) == pytest.approx(2 / 3)
    assert f1([], [2]) == 0.0
    assert f1([1], [2]) == 0.0


def test_salient_frames_nearest_and_with_tolerance() -> None:
    assert salient_frame_indices(FRAME_TIMES, [1.7], None) == [2]
    assert salient_frame_indices(FRAME_TIMES, [2.0], None) == [2, 3]  # a tie keeps both
    assert salient_frame_indices(FRAME_TIMES, [1.7, 3.4], None) == [2, 4]
    assert salient_frame_indices(FRAME_TIMES, [1.7], 0.1) == []  # not visible in this frame set
    assert salient_frame_indices(FRAME_TIMES, [1.7], 1.3) == [1, 2, 3]
    assert salient_frame_indices(FRAME_TIMES, [], None) == []


def kf_call(reward: KeyframeReward, texts: list[str], **columns: Any) -> list[float | None]:
    n = len(texts)
    cols: dict[str, Any] = {
        "frame_times": [FRAME_TIMES] * n,
        "salient_times": [[1.6, 2.4]] * n,  # nearest frames 2 and 3
        "selector_frames": [[]] * n,
    }
    cols.update(columns)
    return call(reward, texts, **cols)


def test_keyframe_f1_against_annotations() -> None:
    texts = [
        format_answer("t", [2, 3], "B"),  # exact
        format_answer("t", [2], "B"),  # half recall
        format_answer("t", [1, 2, 3, 4], "B"),  # over-citing
        format_answer("t", [], "B"),  # cites nothing
        "<think>t</think><keyframes>two</keyframes><answer>B</answer>",  # unparsable list
        "no tags at all",
        format_answer("t", [2, 3, 99], "B"),  # an index outside the prompt counts against precision
    ]
    out = kf_call(KeyframeReward(), texts)
    assert out == pytest.approx([1.0, 2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.8])


def test_keyframe_falls_back_to_selector_then_to_none() -> None:
    text = format_answer("t", [1, 4], "B")
    out = kf_call(KeyframeReward(), [text, text], salient_times=[[], []], selector_frames=[[1, 4], []])
    assert out == [1.0, None]


def test_keyframe_requires_correct_answer_when_configured() -> None:
    right = format_answer("t", [2, 3], "B")
    wrong = format_answer("t", [2, 3], "A")
    assert kf_call(KeyframeReward(requires_correct=True), [right, wrong]) == [1.0, 0.0]
    assert kf_call(KeyframeReward(requires_correct=False), [right, wrong]) == [1.0, 1.0]


def test_soft_overlong_and_length_reward() -> None:
    assert soft_overlong(10, 100, 20) == 0.0
    assert soft_overlong(80, 100, 20) == 0.0
    assert soft_overlong(90, 100, 20) == pytest.approx(-0.5)
    assert soft_overlong(100, 100, 20) == pytest.approx(-1.0)
    assert soft_overlong(101, 100, 20) == -1.0
    reward = LengthReward(100, 20)
    out = reward(prompts=[[], []], completions=[conv("a"), conv("b")], completion_ids=[[0] * 10, [0] * 90])
    assert out == pytest.approx([0.0, -0.5])


def test_build_rewards_takes_names_and_weights_from_the_config() -> None:
    funcs, weights = build_rewards(RewardsSection())
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "keyframe"]
    assert weights == [0.5, 1.0, 0.5]
    cfg = RewardsSection(weights=RewardWeights(length=0.2), max_tokens=256)
    funcs, weights = build_rewards(cfg)
    assert [f.__name__ for f in funcs][-1] == "length"
    assert weights[-1] == 0.2


def test_a_correct_answer_outpays_any_keyframe_citation() -> None:
    """With the default weights, a wrong answer with perfect format and citations earns less
    than a correct one with the same format and no citation."""
    funcs, weights = build_rewards(RewardsSection())
    right_no_cite = format_answer("t", [], "B")
    wrong_perfect_cite = format_answer("t", [2, 3], "A")
    cols = {"frame_times": [FRAME_TIMES] * 2, "salient_times": [[1.6, 2.4]] * 2, "selector_frames": [[]] * 2}
    scores = [call(f, [right_no_cite, wrong_perfect_cite], **cols) for f in funcs]
    totals = [sum(w * (s[i] or 0.0) for w, s in zip(weights, scores, strict=True)) for i in range(2)]
    assert totals[0] > totals[1]


def test_tag_share_zero_stops_paying_for_tag_soup() -> None:
    soup = "<think><answer></answer><answer></keyframes></answer></think></think>"
    soup_answer = "<think>the cup</think><answer>B</answer>"  # two valid blocks, no keyframes
    default, blocks_only = FormatReward(0.5, tag_share=0.5), FormatReward(0.5, tag_share=0.0)
    # the soup's only valid block is its <think> (anything may stand inside one): 1 of 3 blocks
    assert call(blocks_only, [soup])[0] == pytest.approx(0.5 / 3)
    assert (call(default, [soup])[0] or 0.0) > 0.5 / 3 + 0.05  # the default also pays its 5 of 6 tags
    assert call(blocks_only, [soup_answer])[0] == pytest.approx(2 * 0.5 / 3)  # an answer pays more
    assert call(blocks_only, [GOOD]) == [1.0]
