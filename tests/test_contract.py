import numpy as np
import pytest

from egovlm.contract import build_messages, format_answer, parse_answer, question_text
from egovlm.frames import Frame, frame_set


def _frames(n: int) -> list[Frame]:
    img = np.zeros((8, 8, 3), np.uint8)
    return frame_set([img] * n, [2.0 * i for i in range(n)])


def test_messages_put_frames_before_the_question():
    msgs = build_messages(_frames(3), "What did I pick up?", {"A": "cup", "B": "book"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    content = msgs[1]["content"]
    assert [c["type"] for c in content[:3]] == ["text", "image", "text"]
    assert content[0]["text"] == "Frame 1 (t=0.0 s): "
    assert content[6]["text"] == "Frame 3 (t=4.0 s): "
    assert sum(c["type"] == "image" for c in content) == 3
    assert content[-1]["text"].startswith("Question: What did I pick up?\nOptions:\nA. cup\nB. book")


def test_open_question_has_no_options_block():
    assert question_text("Where are my keys?") == "Question: Where are my keys?"


def test_frame_indices_must_be_consecutive():
    frames = _frames(2)
    bad = [frames[1], frames[0]]
    with pytest.raises(ValueError, match="1..N"):
        build_messages(bad, "q", {"A": "x", "B": "y"})


def test_frame_set_orders_by_time():
    imgs = [np.full((4, 4, 3), v, np.uint8) for v in (1, 2, 3)]
    fs = frame_set(imgs, [5.0, 1.0, 3.0])
    assert [f.timestamp_s for f in fs] == [1.0, 3.0, 5.0]
    assert [int(f.image[0, 0, 0]) for f in fs] == [2, 3, 1]


def test_parse_well_formed_answer():
    p = parse_answer(format_answer("the cup moved", [5, 2], "c"))
    assert p.format_ok and p.answer == "C" and p.keyframes == [2, 5] and p.think == "the cup moved"


@pytest.mark.parametrize(
    "text",
    [
        "  <THINK> x </Think>\n\n<keyframes> 1 ,3 </keyframes>   <answer> b </answer>\n",
        "<think>multi\nline</think><keyframes></keyframes><answer>B</answer>",
    ],
)
def test_parser_tolerates_whitespace_and_case(text):
    p = parse_answer(text)
    assert p.format_ok, p.problems
    assert p.answer == "B"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<think>x</think><keyframes>1</keyframes><answer>F</answer>", "one letter"),
        ("<think>x</think><keyframes>1</keyframes><answer>AB</answer>", "one letter"),
        ("<think>x</think><keyframes>one</keyframes><answer>A</answer>", "integers"),
        ("<think>x</think><answer>A</answer>", "missing <keyframes>"),
        ("<keyframes>1</keyframes><answer>A</answer>", "missing <think>"),
        ("<think>x</think><keyframes>1</keyframes>", "missing <answer>"),
        ("<answer>A</answer><think>x</think><keyframes>1</keyframes>", "out of order"),
        ("Sure! <think>x</think><keyframes>1</keyframes><answer>A</answer>", "outside"),
    ],
)
def test_parser_rejects_malformed(text, problem):
    p = parse_answer(text)
    assert not p.format_ok
    assert any(problem in msg for msg in p.problems), p.problems


def test_partial_answers_still_yield_their_parts():
    p = parse_answer("I think it is <answer>d</answer>")
    assert p.answer == "D" and p.keyframes is None and not p.format_ok and p.parts_ok == 1


def test_letter_set_is_configurable():
    assert (
        parse_answer("<think></think><keyframes></keyframes><answer>E</answer>", letters="ABCD").answer
        is None
    )


def test_open_answer_is_free_text():
    p = parse_answer("<think>t</think><keyframes>2</keyframes><answer> on the shelf </answer>", letters=None)
    assert p.format_ok and p.answer == "on the shelf"


def test_plain_prompt_is_images_then_question_options_and_the_letter_instruction():
    from egovlm.contract import PLAIN_INSTRUCTION, build_plain_messages

    msgs = build_plain_messages(_frames(3), "What did I pick up?", {"A": "cup", "B": "book"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<answer>" not in msgs[0]["content"][0]["text"]  # no grammar asked for
    content = msgs[1]["content"]
    assert [c["type"] for c in content] == ["image"] * 3 + ["text"]
    assert content[-1]["text"] == f"What did I pick up?\nA. cup\nB. book\n{PLAIN_INSTRUCTION}"
    with pytest.raises(ValueError, match="needs options"):
        build_plain_messages(_frames(1), "Where are my keys?", {})


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("B.", "B"),
        (" c \n", "C"),
        ("(B) the keys", "B"),
        ("B) the keys", "B"),
        ("D. The person washes the dishes.", "D"),
        ("Answer: B", "B"),
        ("The answer is (C).", "C"),
        ("The correct answer is A, because the cup moves.", "A"),
        ("**D**", "D"),
        ("Answer: **C**", "C"),
    ],
)
def test_parse_letter_reads_the_letter_however_it_is_wrapped(text, letter):
    from egovlm.contract import parse_letter

    assert parse_letter(text, "ABCDE") == letter


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure.",
        "A person picks up the cup.",  # an article, not option A
        "Answer: A person picks up the cup.",
        "E",  # outside the option set
        "The answer is E.",
        "<think>x</think><keyframes>1</keyframes><answer>B</answer>",  # the grammar is not the plain prompt
    ],
)
def test_parse_letter_refuses_what_is_not_a_letter_answer(text):
    from egovlm.contract import parse_letter

    assert parse_letter(text, "ABCD") is None


# --- open questions and answers given as an option's text (contract v2) ------------------------------

OPTS = {"A": "the red cup", "B": "the yellow banana", "C": "the blue book"}


def _answer(body: str) -> str:
    return f"<think>t</think><keyframes>2</keyframes><answer>{body}</answer>"


def test_system_prompt_asks_for_a_letter_or_words_and_the_version_is_bumped():
    from egovlm.contract import CONTRACT_VERSION, SYSTEM_PROMPT

    assert CONTRACT_VERSION == 2
    assert "option letter" in SYSTEM_PROMPT and "without options a short answer in words" in SYSTEM_PROMPT


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (" The  Yellow banana. ", "yellow banana"),
        ("yellow banana", "yellow banana"),
        ("an apple.", "apple"),
        ("A red cup", "red cup"),
        ("A", "a"),  # a lone letter is not an article
        ("the the cup", "the cup"),  # one article only
        ("On the shelf.", "on the shelf"),
        ("3", "3"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, normal):
    from egovlm.contract import normalize_answer

    assert normalize_answer(raw) == normal


def test_answers_match_is_exact_after_normalising():
    from egovlm.contract import answers_match

    assert answers_match("The yellow banana.", "the yellow banana")
    assert answers_match("yellow  banana", "the yellow banana")
    assert answers_match("B", "B") and answers_match("b", "B")
    assert not answers_match("the yellow bananas", "the yellow banana")  # no fuzzy matching
    assert not answers_match("banana", "the yellow banana")
    assert not answers_match("B", "C")
    assert not answers_match(None, "B") and not answers_match("B", None) and not answers_match(" . ", ".")


def test_multiple_choice_answer_as_a_letter_keeps_the_raw_text():
    p = parse_answer(_answer(" b "), "ABC", OPTS)
    assert p.format_ok and p.answer == "B" and p.answer_text == "b"


@pytest.mark.parametrize("body", ["the yellow banana", "The Yellow Banana.", "yellow banana"])
def test_multiple_choice_answer_as_an_options_exact_text_is_its_letter(body):
    p = parse_answer(_answer(body), "ABC", OPTS)
    assert p.format_ok, p.problems
    assert p.answer == "B" and p.answer_text == body


def test_option_text_needs_the_options_and_the_letters_default_to_their_keys():
    assert parse_answer(_answer("the yellow banana"), "ABC").answer is None  # no texts given: letters only
    assert parse_answer(_answer("the yellow banana"), None, OPTS).answer == "B"  # letters from the keys


def test_text_matching_several_options_is_no_answer():
    p = parse_answer(_answer("the cup"), "ABC", {"A": "the cup", "B": "The cup.", "C": "the book"})
    assert p.answer is None and not p.format_ok
    assert any("several options" in msg for msg in p.problems), p.problems


@pytest.mark.parametrize("body", ["the green apple", "yellow", "the yellow banana or the red cup", "F"])
def test_text_that_is_no_option_is_no_answer(body):
    p = parse_answer(_answer(body), "ABC", OPTS)
    assert p.answer is None and not p.format_ok and p.answer_text == body
    assert any("one option's text" in msg for msg in p.problems), p.problems


def test_open_answer_is_the_words_and_an_empty_body_is_no_answer():
    p = parse_answer(_answer(" the yellow banana "), None)
    assert p.format_ok and p.answer == "the yellow banana" == p.answer_text
    for letters, options in ((None, None), ("ABC", OPTS)):
        empty = parse_answer(_answer("  "), letters, options)
        assert empty.answer is None and empty.answer_text is None and not empty.format_ok
