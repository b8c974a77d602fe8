"""Reading review files back: every format to one long table, every bad file refused with the
file and the line named."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ReviewConfig
from tasks.review.errors import ReviewFileError
from tasks.review.ingest import check_ratings, read_ratings

SCHEMA = ReviewConfig().schema_
HEADER = "review_id,run_id,reviewer,relevance,verdict,comment\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_become_typed_ratings_and_blank_rows_are_not_reviewed(tmp_path: Path):
    path = write(tmp_path, "sheet.csv", HEADER
                 + 'a,run1,ann,4,correct,"fine, ""really""\nsecond line"\n'
                 + "b,run1,,2,Incorrect,\n"
                 + "c,run1,ann,,,\n")
    ratings = read_ratings(path, SCHEMA)
    assert ratings["review_id"].tolist() == ["a", "b"]
    assert ratings["relevance"].tolist() == [4, 2]
    assert ratings["verdict"].tolist() == ["correct", "incorrect"]  # the schema's spelling
    assert ratings["comment"].iloc[0] == 'fine, "really"\nsecond line'
    assert ratings["reviewer"].tolist() == ["ann", "sheet"]  # default: the file's name
    assert ratings["source"].tolist() == ["sheet.csv: line 2", "sheet.csv: line 4"]


def test_the_queue_csv_with_extra_columns_and_a_named_default_reviewer(tmp_path: Path):
    path = write(tmp_path, "queue.csv", "review_id,run_id,review_strategy,score_cider,reviewer,"
                 "relevance,verdict,comment\nx,r,worst,0.1,,5,correct,\n")
    ratings = read_ratings(path, SCHEMA, default_reviewer="bob")
    assert ratings.loc[0, ["review_id", "reviewer", "relevance"]].tolist() == ["x", "bob", 5]


def test_jsonl_queue_filled_in(tmp_path: Path):
    rows = [{"review_id": "a", "run_id": "r", "reviewer": "ann", "relevance": 3,
             "verdict": "correct", "references": ["x"], "scores": {"cider": 1.0}},
            {"review_id": "b", "run_id": "r", "reviewer": "", "relevance": None,
             "verdict": "", "comment": ""}]
    path = write(tmp_path, "queue.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ratings = read_ratings(path, SCHEMA)
    assert ratings["review_id"].tolist() == ["a"] and ratings["relevance"].tolist() == [3]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("r.csv", HEADER + "a,r,ann,7,correct,\n", "r.csv: line 2: relevance 7 is outside 1..5"),
    ("r.csv", HEADER + "a,r,ann,3.5,correct,\n", "r.csv: line 2: relevance '3.5' is not a whole"),
    ("r.csv", HEADER + "a,r,ann,x,correct,\n", "r.csv: line 2: relevance 'x' is not a whole"),
    ("r.csv", HEADER + "a,r,ann,\n" + "b,r,ann,3,maybe,\n",
     "r.csv: line 3: verdict 'maybe' is not one of ['correct', 'incorrect']"),
    ("r.csv", "id,score\na,1\n", "r.csv: line 1: no review_id column"),
    ("r.csv", "review_id,notes\na,x\n", "r.csv: line 2: none of the rating columns"),
    ("r.csv", HEADER + "a,r,ann,3,correct,ok,extra\n", "r.csv: line 2: more cells than"),
    ("r.csv", HEADER + 'a,r,ann,3,correct,"never closed\n', "r.csv: line 2"),
    ("r.jsonl", '{"review_id": "a", "relevance": 2}\n{oops\n', "r.jsonl: line 2: not JSON"),
    ("r.jsonl", '["a", 2]\n', "r.jsonl: line 1: not an object with a review_id"),
    ("r.xlsx", "x", "unsupported review file type '.xlsx'"),
])
def test_bad_files_name_the_file_and_the_line(tmp_path: Path, name: str, text: str,
                                               message: str):
    with pytest.raises(ReviewFileError, match=None) as caught:
        read_ratings(write(tmp_path, name, text), SCHEMA)
    assert message in str(caught.value)


def test_non_utf8_missing_and_special_files_are_refused(tmp_path: Path):
    bad = tmp_path / "latin.csv"
    bad.write_bytes(HEADER.encode() + "a,r,ann,3,correct,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ReviewFileError, match="latin.csv: not UTF-8"):
        read_ratings(bad, SCHEMA)
    with pytest.raises(ReviewFileError, match="review file not found"):
        read_ratings(tmp_path / "absent.csv", SCHEMA)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(ReviewFileError, match="is a directory"):
        read_ratings(tmp_path / "folder.csv", SCHEMA)


def ratings(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"review_id": i, "run_id": run, "reviewer": who, "relevance": 3,
                          "source": f"f.csv: line {n + 2}"} for n, (i, run, who) in
                         enumerate(rows)])


def test_checks_refuse_unknown_ids_other_runs_and_repeated_ratings():
    check_ratings(ratings([("a", "r", "ann"), ("a", "", "bob")]), {"a", "b"}, "r")
    with pytest.raises(ReviewFileError, match=r"f.csv: line 3: review_id 'zz' is not in"):
        check_ratings(ratings([("a", "r", "ann"), ("zz", "r", "ann")]), {"a"}, "r")
    with pytest.raises(ReviewFileError, match=r"f.csv: line 2: written for run other, not r"):
        check_ratings(ratings([("a", "other", "ann")]), {"a"}, "r")
    with pytest.raises(ReviewFileError,
                       match=r"f.csv: line 4: ann rated 'a' again \(also at f.csv: line 2\)"):
        check_ratings(ratings([("a", "r", "ann"), ("b", "r", "ann"), ("a", "r", "ann")]),
                      {"a", "b"}, "r")
