"""Rewards on hand-written completions, well-formed and malformed, through TRL's call signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from egovlm.contract import format_answer
from egovlm.train.config import RewardsSection, RewardWeights
from egovlm.train.rewards import (
    AccuracyReward,
    FormatReward,
    KeyframeReward,
    LengthReward,
    PositionalPrior,
    PriorDataError,
    build_rewards,
    completion_text,
    f1,
    f_beta,
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


# --- the keyframe reward that must look (issue 22): content-free strategies earn nothing ---------------

N_FRAMES = 8
GRID = [i + 0.5 for i in range(N_FRAMES)]  # uniform sampling of an 8 s clip: frame p at p - 0.5 s


def farmable_rows(seed: int, count: int = 400) -> list[tuple[str, list[int]]]:
    """(question type, salient frame positions) drawn like the review's EgoSynth test set: "first"
    questions mostly about frame 1, "last" ones about frame 8, one or two salient frames."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        qt = "first" if i % 2 == 0 else "last"
        home = 1 if qt == "first" else N_FRAMES
        size = 1 if rng.random() < 0.5 else 2
        salient = {home} if rng.random() < 0.40 else {rng.randint(1, N_FRAMES)}
        while len(salient) < size:
            salient.add(rng.randint(1, N_FRAMES))
        rows.append((qt, sorted(salient)))
    return rows


def as_items(rows: list[tuple[str, list[int]]]) -> list[Any]:
    from egovlm.schema import QAItem

    return [
        QAItem(
            id=f"r{i}",
            video="v.mp4",
            question="q",
            options={"A": "x", "B": "y"},
            answer="B",
            salient_times=[GRID[p - 1] for p in salient],
            duration_s=float(N_FRAMES),
            question_type=qt,
            source="test",
        )
        for i, (qt, salient) in enumerate(rows)
    ]


def strategy_scores(reward: KeyframeReward, rows: list[tuple[str, list[int]]], cite: Any, letter: str = "B"):
    texts = [format_answer("t", cite(qt, salient), letter) for qt, salient in rows]
    n = len(rows)
    return call(
        reward,
        texts,
        answer=["B"] * n,
        frame_times=[GRID] * n,
        salient_times=[[GRID[p - 1] for p in s] for _, s in rows],
        selector_frames=[[]] * n,
        question_type=[qt for qt, _ in rows],
    )


def mean(xs: list[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals)


def best_fixed_position(rows: list[tuple[str, list[int]]]) -> dict[str, int]:
    """Per question type, the single frame whose citation earns the most plain F1 on ``rows``."""
    return {
        qt: max(range(1, N_FRAMES + 1), key=lambda p: sum(f1([p], s) for q, s in rows if q == qt))
        for qt in {q for q, _ in rows}
    }


def test_content_free_strategies_that_farm_f1_earn_nothing_against_the_positional_prior() -> None:
    train, test = farmable_rows(seed=1), farmable_rows(seed=2)
    best = best_fixed_position(test)  # the strongest fixed choice, picked on the test set itself
    cite_all = lambda qt, s: list(range(1, N_FRAMES + 1))  # noqa: E731
    fixed = lambda qt, s: [best[qt]]  # noqa: E731
    plain = KeyframeReward()
    # The dataset reproduces what the review measured under plain F1 ...
    assert mean(strategy_scores(plain, test, cite_all)) == pytest.approx(0.31, abs=0.02)
    assert mean(strategy_scores(plain, test, fixed)) == pytest.approx(0.43, abs=0.02)
    # ... and the recipe's reward pays neither anything.
    prior = PositionalPrior.from_items(as_items(train))
    looking = KeyframeReward(
        requires_correct=True, beta=0.5, max_cited=None, prior="positional", prior_data=prior
    )
    assert mean(strategy_scores(looking, test, cite_all)) == 0.0
    assert mean(strategy_scores(looking, test, fixed)) < 0.01
    # Citing exactly the salient frames with the right answer earns full reward wherever looking can be
    # measured (a content-free guess is not already exact), and that is most prompts.
    exact = strategy_scores(looking, test, lambda qt, s: s)
    assert mean(exact) == 1.0
    assert sum(x is not None for x in exact) > 0.5 * len(test)
    # A wrong answer earns nothing, however well it cites.
    wrong = strategy_scores(looking, test, lambda qt, s: s, letter="A")
    assert set(wrong) <= {0.0, None}


def test_every_fixed_citation_earns_nothing_against_the_expected_prior() -> None:
    """The positional prior pays nothing to its own family (prefixes of one ranking), but a fixed
    citation outside it, e.g. one frame that is not the type's best, is still paid where it happens
    to hit. Against ``expected`` every fixed citation of up to three frames averages 0 on the rows
    the prior was estimated from (salient moments at frame centres, so both map frames alike), and
    citing the salient frames earns clearly more."""
    import itertools

    rows = farmable_rows(seed=1)
    prior = PositionalPrior.from_items(as_items(rows))
    kwargs: dict[str, Any] = {"requires_correct": True, "beta": 0.5, "max_cited": 3, "prior_data": prior}
    positional = KeyframeReward(prior="positional", **kwargs)
    expected = KeyframeReward(prior="expected", **kwargs)
    fixed = [list(c) for k in (1, 2, 3) for c in itertools.combinations(range(1, N_FRAMES + 1), k)]
    worth = {
        tuple(c): [mean(strategy_scores(r, rows, lambda qt, s, c=c: c)) for r in (positional, expected)]
        for c in fixed
    }
    assert max(p for p, _ in worth.values()) > 0.1  # farmable against the positional prior
    assert max(abs(e) for _, e in worth.values()) < 1e-9  # against expected: 0, whatever is cited
    looking = strategy_scores(expected, rows, lambda qt, s: s)
    assert None not in looking and mean(looking) > 0.5
    # signed: a correct answer that cites the frame a guess would get right, but this clip's moment is
    # elsewhere, earns below 0; a wrong answer earns 0; no citation or over the cap earns 0
    last_home = [r for r in rows if r[0] == "last" and r[1] == [2]][:1]
    assert strategy_scores(expected, last_home, lambda qt, s: [N_FRAMES])[0] < 0
    assert strategy_scores(expected, last_home, lambda qt, s: s, letter="A") == [0.0]
    assert strategy_scores(expected, last_home, lambda qt, s: [1, 2, 3, 4]) == [0.0]
    with pytest.raises(ValueError, match="expected keyframe prior needs prior_data"):
        KeyframeReward(prior="expected")


def test_cap_and_cite_all_baseline() -> None:
    capped = KeyframeReward(max_cited=2, prior="none")
    # salient frames 2 and 3: three citations are over the cap, two are fine
    assert kf_call(capped, [format_answer("t", [1, 2, 3], "B"), format_answer("t", [2, 3], "B")]) == [
        0.0,
        1.0,
    ]
    cite_all = KeyframeReward(prior="cite_all")
    out = kf_call(cite_all, [format_answer("t", [1, 2, 3, 4], "B"), format_answer("t", [2, 3], "B")])
    assert out == [0.0, 1.0]
    half = kf_call(cite_all, [format_answer("t", [2], "B")])[0]  # F1 2/3 against cite-all's 2/3
    assert half == pytest.approx(0.0)


def test_f_beta_below_one_weights_precision() -> None:
    over, under = [2, 3, 4], [2]
    assert f_beta(over, [2, 3], 1.0) == pytest.approx(f1(over, [2, 3]))
    assert f_beta(over, [2, 3], 0.5) < f_beta(under, [2, 3], 0.5)
    assert f_beta(over, [2, 3], 2.0) > f_beta(under, [2, 3], 2.0)


def test_positional_prior_is_read_lazily_from_a_jsonl_and_explains_missing_data(tmp_path: Path) -> None:
    from egovlm.schema import write_jsonl

    path = tmp_path / "qa.jsonl"
    reward = KeyframeReward(prior="positional", prior_data=path)  # the file does not exist yet
    write_jsonl(path, as_items([("first", [1])] * 3))
    assert reward.positional().ranking("first", N_FRAMES)[0] == 1
    assert reward.positional().ranking("never seen", N_FRAMES)[0] == 1  # pooled over all types
    unannotated = [i.model_copy(update={"salient_times": None}) for i in as_items([("first", [1])])]
    write_jsonl(tmp_path / "bare.jsonl", unannotated)
    with pytest.raises(PriorDataError, match="keyframe_prior: cite_all"):
        PositionalPrior.from_jsonl(tmp_path / "bare.jsonl")
    with pytest.raises(PriorDataError, match="not found"):
        PositionalPrior.from_jsonl(tmp_path / "missing.jsonl")


def test_positional_prior_uses_the_clip_window() -> None:
    """A question cut from a long video (start_s/end_s) is placed within its window, not the video."""
    item = as_items([("first", [1])])[0].model_copy(
        update={"start_s": 100.0, "end_s": 108.0, "salient_times": [107.5], "duration_s": 600.0}
    )
    assert PositionalPrior.from_items([item]).ranking("first", N_FRAMES)[0] == N_FRAMES


def test_build_rewards_passes_the_keyframe_definition() -> None:
    cfg = RewardsSection(keyframe_beta=0.5, keyframe_max_cited=3, keyframe_prior="cite_all")
    funcs, _ = build_rewards(cfg)
    kf = funcs[2]
    assert isinstance(kf, KeyframeReward)
    assert (kf.beta, kf.max_cited, kf.prior) == (0.5, 3, "cite_all")


# --- option texts and open questions -----------------------------------------------------------------

OPTION_TEXTS = ["the red cup", "the yellow banana", "the blue book", "the green apple"]


def test_accuracy_pays_an_answer_written_as_the_options_text() -> None:
    texts = [
        format_answer("t", [2], "the yellow banana"),  # B's text
        format_answer("t", [2], "Yellow banana."),  # B's text, normalised
        format_answer("t", [2], "the red cup"),  # A's text: wrong
        format_answer("t", [2], "the yellow bananas"),  # no option's text: no answer
    ]
    cols = {"letters": ["ABCD"] * 4, "option_texts": [OPTION_TEXTS] * 4}
    assert call(AccuracyReward(), texts, **cols) == [1.0, 1.0, 0.0, 0.0]
    assert call(FormatReward(), texts, **cols)[:3] == [1.0, 1.0, 1.0]
    assert call(AccuracyReward(), texts[:1]) == [0.0]  # without option_texts only letters count


def test_accuracy_of_an_open_answer_is_exact_after_normalising() -> None:
    texts = [
        format_answer("t", [2], "the yellow banana"),
        format_answer("t", [2], "The yellow banana."),
        format_answer("t", [2], "yellow banana"),
        format_answer("t", [2], "the banana"),  # near miss
        format_answer("t", [2], "the yellow bananas"),  # near miss
        format_answer("t", [2], "B"),  # a letter is just a word here
        format_answer("t", [2], ""),
    ]
    n = len(texts)
    out = call(
        AccuracyReward(), texts, letters=[None] * n, option_texts=[[]] * n, answer=["the yellow banana"] * n
    )
    assert out == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_keyframe_gate_applies_to_open_answers_and_option_texts() -> None:
    right = format_answer("t", [2, 3], "the yellow banana")
    near = format_answer("t", [2, 3], "the yellow bananas")
    gate = KeyframeReward(requires_correct=True)
    open_cols = {"letters": [None, None], "option_texts": [[], []], "answer": ["the yellow banana"] * 2}
    assert kf_call(gate, [right, near], **open_cols) == [1.0, 0.0]
    mc_cols = {"letters": ["ABCD"] * 2, "option_texts": [OPTION_TEXTS] * 2}
    assert kf_call(gate, [right, near], **mc_cols) == [1.0, 0.0]
