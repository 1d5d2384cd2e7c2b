import json

import pytest

from egovlm.schema import DatasetError, QAItem, read_jsonl, write_jsonl


def _row(**over):
    row = {
        "id": "q1",
        "video": "clips/a.mp4",
        "question": "What did I pick up first?",
        "options": {"A": "cup", "B": "book", "C": "apple"},
        "answer": "B",
        "source": "test",
    }
    row.update(over)
    return row


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_round_trip(tmp_path):
    items = [QAItem.model_validate(_row(id=f"q{i}", salient_times=[3.0, 1.0])) for i in range(3)]
    path = tmp_path / "d.jsonl"
    assert write_jsonl(path, items) == 3
    back = read_jsonl(path)
    assert back == items
    assert back[0].salient_times == [1.0, 3.0]
    assert back[0].media_path(tmp_path) == tmp_path / "clips/a.mp4"


@pytest.mark.parametrize(
    ("row", "where"),
    [
        (_row(answer="Z"), ":2:"),
        (_row(options={"A": "x", "C": "y"}), ":2:options"),
        (_row(question=""), ":2:question"),
        (_row(salient_times=[-1.0]), ":2:salient_times"),
        (_row(start_s=-0.5), ":2:start_s"),
        (_row(start_s=4.0, end_s=4.0), ":2:end_s: Value error, end_s (4.0) must be greater than start_s"),
        (_row(end_s=-1.0), ":2:end_s"),
        (
            _row(start_s=1.0, end_s=5.0, salient_times=[2.0, 6.5]),
            ":2:salient_times: Value error, [6.5] lie outside",
        ),
        (_row(start_s=3.0, salient_times=[1.0]), ":2:salient_times"),
        (_row(end_s=40.0, duration_s=30.0), "end_s (40.0) is past the video's duration_s"),
        (_row(frames_dir="f/"), ":2:"),
        ({**_row(), "colour": "red"}, ":2:colour"),
        ("{not json", ":2: not valid JSON"),
        ("[1, 2]", ":2: a row must be a JSON object"),
    ],
)
def test_bad_row_is_reported_with_file_line_and_field(tmp_path, row, where):
    path = tmp_path / "d.jsonl"
    _write(path, [_row(id="ok"), row])
    with pytest.raises(DatasetError) as e:
        read_jsonl(path)
    assert str(e.value).startswith(str(path)) and where in str(e.value)


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "d.jsonl"
    _write(path, [_row(), "", _row()])
    with pytest.raises(DatasetError, match="duplicate id 'q1'"):
        read_jsonl(path)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [QAItem.model_validate(_row())])
    before = path.read_bytes()

    def rows():
        yield QAItem.model_validate(_row(id="new"))
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


def test_written_files_are_world_readable(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [QAItem.model_validate(_row())])
    assert path.stat().st_mode & 0o044 == 0o044


def test_clip_window_round_trips_and_old_rows_still_load(tmp_path):
    path = tmp_path / "d.jsonl"
    old = _row(id="old")  # written before start_s/end_s existed
    _write(path, [old, _row(id="cut", start_s=2.0, end_s=9.5, salient_times=[9.5, 2.0])])
    old_item, cut = read_jsonl(path)
    assert (old_item.start_s, old_item.end_s) == (None, None)
    assert (cut.start_s, cut.end_s, cut.salient_times) == (2.0, 9.5, [2.0, 9.5])
    write_jsonl(path, [old_item, cut])
    assert read_jsonl(path) == [old_item, cut]


def test_open_question_has_no_options_and_words_for_its_answer(tmp_path):
    item = QAItem.model_validate(_row(options=None, answer="the yellow banana"))
    assert item.is_open and item.letters is None
    assert QAItem.model_validate(_row()).letters == "ABC" and not QAItem.model_validate(_row()).is_open
    withheld = QAItem.model_validate(_row(id="q2", options=None, answer=None))
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [item, withheld])
    assert read_jsonl(path) == [item, withheld]


@pytest.mark.parametrize("answer", ["", "   "])
def test_open_question_needs_non_empty_words(tmp_path, answer):
    path = tmp_path / "d.jsonl"
    _write(path, [_row(options=None, answer=answer)])
    with pytest.raises(DatasetError, match="non-empty"):
        read_jsonl(path)


def test_options_key_is_still_required(tmp_path):
    """An open question says ``"options": null``; a row without the key is still a broken row."""
    row = _row()
    del row["options"]
    path = tmp_path / "d.jsonl"
    _write(path, [row])
    with pytest.raises(DatasetError, match=":1:options"):
        read_jsonl(path)
