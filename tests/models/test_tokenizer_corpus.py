"""The offline tokenizer's extra corpus: EgoSynth's words become whole tokens, the default is unchanged."""

import hashlib
import json
import re

import numpy as np
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from egovlm.models import tokenizer as tokenizer_module
from egovlm.models.build import build_model
from egovlm.models.files import EGOVLM_META, TOKENIZER_CORPUS
from egovlm.models.presets import PRESETS
from egovlm.models.tokenizer import build_tokenizer
from egovlm.synth.objects import CATALOGUE
from egovlm.synth.qa import make_drafts
from egovlm.synth.scene import PLACES
from egovlm.synth.script import ACTIVITIES, plan_clip
from egovlm.synth.vocabulary import egosynth_vocabulary

# sha256 of the tiny preset's tokenizer.json, recorded before the extra corpus existed, with the
# corpus of that time (whose first sentence was the contract v1 system prompt below).
DEFAULT_TINY_TOKENIZER_SHA256 = "ec7c389121373bffb2ed2b647c0f1fdcafe5f37be7c6564f347301bfaa78fc55"
V1_SYSTEM_PROMPT = (
    "You watch keyframes from a head-mounted camera and answer a multiple-choice question. "
    "Think inside <think></think>, cite the frame numbers your answer rests on inside "
    "<keyframes></keyframes>, then give the option letter inside <answer></answer>."
)


@pytest.fixture(scope="module")
def vocabulary() -> list[str]:
    return egosynth_vocabulary()


def _sha256_of_saved(tok, tmp_path) -> str:
    tok.save_pretrained(tmp_path)
    return hashlib.sha256((tmp_path / "tokenizer.json").read_bytes()).hexdigest()


def test_default_tokenizer_is_byte_identical_to_before(monkeypatch, tmp_path):
    """Without an extra corpus the builder trains exactly what it trained before the option existed.
    (The built-in corpus starts with the contract's system prompt, so the recorded hash is checked
    against the corpus of the time: a new system prompt changes the default tokenizer on purpose.)"""
    corpus = [V1_SYSTEM_PROMPT, *tokenizer_module._CORPUS[1:]]
    monkeypatch.setattr(tokenizer_module, "_CORPUS", corpus)
    tok = build_tokenizer(PRESETS["tiny"].vocab_size)
    assert _sha256_of_saved(tok, tmp_path) == DEFAULT_TINY_TOKENIZER_SHA256


def test_default_build_has_the_default_tokenizer_and_no_corpus_field(tiny_model_dir, tmp_path):
    default = build_tokenizer(PRESETS["tiny"].vocab_size)
    assert (
        _sha256_of_saved(default, tmp_path)
        == hashlib.sha256((tiny_model_dir / "tokenizer.json").read_bytes()).hexdigest()
    )
    meta = json.loads((tiny_model_dir / EGOVLM_META).read_text())
    assert TOKENIZER_CORPUS not in meta
    # the default tokenizer is what the extra corpus fixes: names come out in fragments
    assert len(default.encode("the silver spoon", add_special_tokens=False)) > 3


@pytest.mark.parametrize("kind", ["tiny", "nano"])
def test_egosynth_corpus_makes_every_catalogue_name_whole_words(kind, vocabulary):
    tok = build_tokenizer(PRESETS[kind].vocab_size, vocabulary)
    for obj in CATALOGUE:
        assert len(tok.encode(obj.name, add_special_tokens=False)) <= 2, obj.name
        # each word one token, at the start of a text, after a space and before a full stop
        for text in (obj.name, f"the {obj.name}", f"The {obj.name}."):
            ids = tok.encode(text, add_special_tokens=False)
            assert len(ids) == len(text.split()) + text.endswith("."), tok.convert_ids_to_tokens(ids)
            assert tok.decode(ids) == text
    for text in ("yellow banana", "<answer>the yellow banana</answer>", "<answer>the silver spoon</answer>"):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert len(tok.encode("<answer>the silver spoon</answer>", add_special_tokens=False)) == 5


def test_egosynth_corpus_makes_places_and_activities_whole_words(vocabulary):
    tok = build_tokenizer(PRESETS["nano"].vocab_size, vocabulary)
    phrases = [p for place in PLACES for p in (place.at, place.from_, place.to, place.label)]
    phrases += [a.description for a in ACTIVITIES]
    for text in phrases:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text.split()), tok.convert_ids_to_tokens(ids)


def test_vocabulary_covers_the_catalogue_places_activities_and_questions(vocabulary):
    sentences = set(vocabulary)
    for obj in CATALOGUE:
        assert {obj.name, f"the {obj.name}", f"The {obj.name}."} <= sentences, obj.name
    for place in PLACES:
        assert {place.label, place.at, place.from_, place.to} <= sentences, place.name
    for activity in ACTIVITIES:
        assert activity.description in sentences
    assert any("<answer>" in s and "</answer>" in s and "<think>" in s for s in vocabulary)
    # the QA builders' words, on clips the vocabulary did not plan, are all in it
    words = {w for s in vocabulary for w in re.findall(r"[A-Za-z]+", s)}
    for seed in range(1000, 1006):
        rng = np.random.default_rng(seed)
        for draft in make_drafts(plan_clip(rng, 30.0, 10.0, head_motion=False), rng):
            for text in (draft.question, draft.correct, *draft.distractors):
                assert set(re.findall(r"[A-Za-z]+", text)) <= words, text
    assert egosynth_vocabulary() == vocabulary  # deterministic


def test_cli_builds_with_the_egosynth_corpus_and_records_it(tmp_path):
    from egovlm.models.cli import app

    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["tiny", "--out", str(out), "--corpus", "egosynth"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / EGOVLM_META).read_text())[TOKENIZER_CORPUS] == "egosynth"
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    for obj in CATALOGUE:
        assert len(tok.encode(obj.name, add_special_tokens=False)) <= 2, obj.name
    assert len(tok.encode("<think>", add_special_tokens=False)) == 1


def test_build_model_records_a_custom_corpus(tmp_path):
    out = build_model("tiny", tmp_path / "m", extra_corpus=["quokka wombat"] * 3, corpus_name="marsupials")
    assert json.loads((out / EGOVLM_META).read_text())[TOKENIZER_CORPUS] == "marsupials"
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert len(tok.encode("quokka wombat", add_special_tokens=False)) == 2
