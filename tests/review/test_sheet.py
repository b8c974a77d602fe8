"""The offline HTML review sheet: static checks of the page, and a real headless Chromium that
clicks ratings and saves them as a CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import RatingField
from tasks.review.queue import QUEUE_COLUMNS
from tasks.review.sheet import csv_columns, ratings_file_name, render_sheet
from tests.helpers import COLORS, draw

RUN_ID = "0123456789abcdef0123456789abcdef"
NASTY_ID = "item</script><script>window.__pwned=1</script>"
INJECTION = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
COMMENT = 'Wrong colour, "red" is not\n"green", at all'
SCHEMA = [
    RatingField(name="relevance", type="rating", min=1, max=5, title="How well does it fit?"),
    RatingField(name="verdict", type="choice", choices=["correct", "incorrect"],
                title="Is it correct?"),
    RatingField(name="comment", type="text", required=False, title="Comment"),
]


def queue_of(root: Path) -> pd.DataFrame:
    """Six queued items: four drawn PNGs (one with hostile texts), a broken file, a missing one."""
    names = list(COLORS)
    paths = [root / f"{name}.png" for name in names]
    for path, name in zip(paths, names, strict=True):
        draw(path, COLORS[name])
    (root / "broken.png").write_bytes(b"this is not an image")
    paths += [root / "broken.png", root / "missing.png"]
    rows = []
    for index, path in enumerate(paths):
        color = names[index % len(names)]
        rows.append({"review_id": NASTY_ID if index == 2 else f"item-{index}", "run_id": RUN_ID,
                     "review_strategy": "worst" if index % 2 else "random",
                     "status": "failed" if index == 5 else "scored",
                     "reason": "image decode failed" if index == 5 else "",
                     "image_path": str(path), "question": f"What is shown? ({index})",
                     "prediction": INJECTION if index == 2 else f"a {color} square",
                     "references": [f"a {color} square", f"a picture of a {color} square"],
                     "scores": {"rank": float(index + 1), "recall_at_1": 0.5}})
    queue = pd.DataFrame(rows, columns=[*QUEUE_COLUMNS])
    queue["reviewer"] = ""
    for field in SCHEMA:
        queue[field.name] = ""
    return queue


@pytest.fixture
def sheet(tmp_path: Path) -> str:
    return render_sheet(queue_of(tmp_path), SCHEMA, RUN_ID, "Review <b>run</b> & co")


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def data_block(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', html,
                      re.DOTALL)
    assert found, "no JSON block"
    return json.loads(found.group(1))


# -- static checks ------------------------------------------------------------------------------


def test_sheet_references_nothing_outside_the_file(sheet: str):
    links = [(tag, name, value) for tag, attrs in parse(sheet).tags
             for name, value in attrs.items() if name in ("src", "href", "srcset", "action",
                                                          "poster", "data", "formaction")]
    assert links, "expected the inline images"
    assert all((value or "").startswith(("data:image/jpeg;base64,", "#"))
               for _, _, value in links), links
    text = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", sheet)
    assert not re.search(r"https?:|//[a-z]", text, re.IGNORECASE)
    style = re.search(r"<style>(.*?)</style>", sheet, re.DOTALL)
    assert style and not re.search(r"@import|url\(", style.group(1), re.IGNORECASE)
    assert "default-src 'none'" in sheet  # and the CSP forbids anything else


def test_user_texts_are_escaped_everywhere(sheet: str):
    tags = parse(sheet)
    assert [attrs.get("type") for tag, attrs in tags.tags if tag == "script"] == [
        "application/json", None]
    assert "window.__pwned" not in "".join(tags.scripts[1:])
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x" in sheet
    assert "<img src=x" not in sheet and "onerror" not in {n for _, a in tags.tags for n in a}
    assert "<title>Review &lt;b&gt;run&lt;/b&gt; &amp; co</title>" in sheet
    assert "<code>item&lt;/script&gt;&lt;script&gt;" in sheet


def test_json_block_is_valid_and_cannot_close_its_element(sheet: str):
    block = re.search(r'id="sheet-data">(.*?)</script>', sheet, re.DOTALL)
    assert block and "<" not in block.group(1) and ">" not in block.group(1)
    data = data_block(sheet)
    assert data["items"] == ["item-0", "item-1", NASTY_ID, "item-3", "item-4", "item-5"]
    assert data["run_id"] == RUN_ID and data["file_name"] == "ratings-01234567.csv"
    assert data["columns"] == csv_columns(SCHEMA) == [
        "review_id", "run_id", "reviewer", "relevance", "verdict", "comment"]
    assert [f["required"] for f in data["fields"]] == [True, True, False]


def test_unreadable_images_show_a_placeholder_with_the_reason(sheet: str):
    assert "Image unavailable: not a readable image: unknown or unsupported image format" in sheet
    assert "Image unavailable: No such file or directory" in sheet
    assert sheet.count('<img src="data:image/jpeg;base64,') == 4


def test_directory_or_missing_path_gives_a_placeholder(tmp_path: Path):
    queue = queue_of(tmp_path).iloc[:2].copy()
    queue["image_path"] = [str(tmp_path), None]
    html = render_sheet(queue, SCHEMA, RUN_ID, "t")
    assert "Image unavailable: image file is a directory, not a regular file" in html
    assert "Image unavailable: no image path" in html


def test_thumbnails_are_small_jpegs(tmp_path: Path):
    from PIL import Image

    Image.new("RGB", (1000, 500), "orange").save(tmp_path / "wide.png")
    queue = queue_of(tmp_path).iloc[:1].assign(image_path=str(tmp_path / "wide.png"))
    src = re.search(r'src="data:image/jpeg;base64,([^"]+)"', render_sheet(queue, SCHEMA, "r", "t"))
    assert src
    with Image.open(io.BytesIO(base64.b64decode(src.group(1)))) as image:
        assert (image.format, image.size) == ("JPEG", (384, 192))


def test_each_field_has_labelled_accessible_controls(sheet: str):
    tags = parse(sheet).tags
    radios = [a for t, a in tags if t == "input" and a.get("type") == "radio"]
    assert len(radios) == 6 * (5 + 2)
    labelled = {a.get("for") for t, a in tags if t == "label"}
    assert all(r["id"] in labelled for r in radios)
    assert [r["value"] for r in radios[:7]] == ["1", "2", "3", "4", "5", "correct", "incorrect"]
    assert {r["name"] for r in radios[:7]} == {"a0-relevance", "a0-verdict"}
    assert sheet.count("<fieldset") == sheet.count("<legend>") == 6 * 2
    assert [a["id"] for t, a in tags if t == "textarea"] == [f"a{i}-comment" for i in range(6)]
    assert {"a0-comment", "reviewer"} <= labelled


def test_the_item_shows_its_texts_scores_and_strategy(sheet: str):
    assert "<dd>What is shown? (0)</dd>" in sheet
    assert "<li>a picture of a red square</li>" in sheet
    assert '<th scope="row">rank</th><td class="num">1</td>' in sheet
    assert "Chosen by <b>random</b>" in sheet and "status failed: image decode failed" in sheet
    assert "0 of 6 rated" in sheet


def test_file_name_keeps_the_run_id_prefix_only():
    assert ratings_file_name(RUN_ID) == "ratings-01234567.csv"
    assert ratings_file_name("../x/y") == "ratings-xy.csv"
    assert ratings_file_name("") == "ratings.csv"


def test_an_empty_queue_gives_a_valid_sheet(tmp_path: Path):
    html = render_sheet(queue_of(tmp_path).iloc[:0], SCHEMA, RUN_ID, "t")
    assert "nothing to review" in html and "0 of 0 rated" in html
    assert data_block(html)["items"] == []


# -- in a real browser --------------------------------------------------------------------------


def click(page, item: int, field: str, value: str) -> None:
    page.click(f'label[for="a{item}-{field}-{value}"]')


def no_download(page, action) -> None:
    downloads: list = []

    def listen(download) -> None:
        downloads.append(download)

    page.on("download", listen)
    action()
    page.wait_for_timeout(300)
    page.remove_listener("download", listen)
    assert downloads == []


def rate(page) -> None:
    """Answers for items 0-3; item 4 is rated and cleared again, item 5 is left alone."""
    click(page, 0, "relevance", "4")
    click(page, 0, "verdict", "correct")
    page.focus("#a1-relevance-1")
    page.keyboard.press("Space")
    page.keyboard.press("ArrowRight")  # keyboard: 1 -> 2
    click(page, 1, "verdict", "incorrect")
    click(page, 2, "relevance", "1")
    click(page, 2, "verdict", "incorrect")
    page.fill("#a3-comment", COMMENT)
    click(page, 4, "relevance", "5")
    page.click('#item-4 button[data-group="a4-relevance"]')


@pytest.mark.e2e
def test_clicks_in_chromium_come_back_as_the_csv(tmp_path: Path):
    from tests.browser import chromium_page, external_requests, record_errors, record_requests

    path = tmp_path / "sheet.html"
    path.write_text(render_sheet(queue_of(tmp_path), SCHEMA, RUN_ID, "Review"), "utf-8")
    with chromium_page(tmp_path / "downloads") as page:
        requests, errors = record_requests(page), record_errors(page)
        page.goto(path.as_uri())
        assert page.locator(".noimg").count() == 2
        assert "__pwned" not in page.evaluate("Object.keys(window).join()")
        no_download(page, lambda: page.click("#save"))
        assert "Reviewer" in page.inner_text("#message")
        page.fill("#reviewer", 'Ana, "QA"')
        no_download(page, lambda: page.click("#save"))
        assert "Nothing answered" in page.inner_text("#message")
        rate(page)
        assert page.inner_text("#progress") == "3 of 6 rated"
        page.reload()  # answers survive through localStorage
        assert page.is_checked("#a0-relevance-4") and page.input_value("#reviewer") == 'Ana, "QA"'
        assert page.input_value("#a3-comment") == COMMENT
        with page.expect_download() as info:
            page.click("#save")
        download = info.value
        assert download.suggested_filename == "ratings-01234567.csv"
        download.save_as(tmp_path / "ratings.csv")
        escaped = page.evaluate("(cells) => cells.map(window.bifocalSheet.csvCell).join(',')",
                                NASTY_CELLS)
    assert external_requests(requests) == [] and errors == []
    assert next(csv.reader(io.StringIO(escaped, newline=""))) == NASTY_CELLS
    assert_ratings(tmp_path / "ratings.csv")


NASTY_CELLS = ["a,b", 'say "hi"', "line1\nline2", '"', "", " lead", "trail ", "\r\n", '"",\n"',
               "=1+1", "ünï ✓", "tab\there"]


def assert_ratings(path: Path) -> None:
    text = path.read_bytes().decode("utf-8")
    assert text.startswith("review_id,run_id,reviewer,relevance,verdict,comment\r\n")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert table.to_dict(orient="records") == [
        {"review_id": "item-0", "run_id": RUN_ID, "reviewer": 'Ana, "QA"', "relevance": "4",
         "verdict": "correct", "comment": ""},
        {"review_id": "item-1", "run_id": RUN_ID, "reviewer": 'Ana, "QA"', "relevance": "2",
         "verdict": "incorrect", "comment": ""},
        {"review_id": NASTY_ID, "run_id": RUN_ID, "reviewer": 'Ana, "QA"', "relevance": "1",
         "verdict": "incorrect", "comment": ""},
        {"review_id": "item-3", "run_id": RUN_ID, "reviewer": 'Ana, "QA"', "relevance": "",
         "verdict": "", "comment": COMMENT},
    ]
    with path.open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 5
