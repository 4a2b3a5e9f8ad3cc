"""Untrusted alt text in markdown metadata: rendered as CommonMark with tables (as the Dagster UI does), it
stays the text it was, in its own cell, and makes no image, link or HTML."""

import html
import re

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from paris_assets.assets.common import counts_table, md_escape, preview

HOSTILE = [
    "a | b | c",
    "![x](http://evil/x.png)",
    "[link](javascript:alert(1))",
    "line one\nline two\r\n| x | y |\n|---|---|",
    "<img src=x onerror=alert(1)> <script>alert(1)</script>",
    "http://evil.example/autolink <http://evil.example/> www.evil.example",
    "**bold** _it_ `code` ~~gone~~ # heading \\| escaped pipe \\",
    "[ref]: http://evil/ &lt;entity&gt; &#106;avascript:",
]


def render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def cells(rendered: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", rendered, re.S)
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)] for row in rows]


def test_preview_keeps_hostile_alt_text_inert_and_in_its_cell():
    frame = pd.DataFrame({"image_id": [f"id{i}" for i in range(len(HOSTILE))], "alt_text": HOSTILE,
                          "aesthetic": [5.5] * len(HOSTILE)})
    rendered = render(preview(frame, rows=len(HOSTILE)).value)
    assert "<img" not in rendered and "<a " not in rendered and "<script" not in rendered
    assert "<strong>" not in rendered and "<em>" not in rendered and "<code>" not in rendered
    table = cells(rendered)
    assert table[0] == ["image_id", "alt_text", "aesthetic"]
    assert len(table) == len(HOSTILE) + 1 and all(len(row) == 3 for row in table)
    for row, text in zip(table[1:], HOSTILE):
        assert row[1].strip() == " ".join(text.split())  # the same characters, on one line
        assert row[2].strip() == "5.5"


def test_counts_table_escapes_its_keys():
    rendered = render(counts_table({"caption_not_utf8:invalid | [x](http://e)": 3, "http_404": 2}).value)
    assert "<a " not in rendered
    assert cells(rendered)[1:] == [["caption_not_utf8:invalid | [x](http://e)", "3"], ["http_404", "2"]]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_is_one_line_and_renders_as_the_text(text):
    escaped = md_escape(text)
    assert "\n" not in escaped and "\r" not in escaped
    paragraph = render(escaped)
    assert "<a " not in paragraph and "<img" not in paragraph
    assert html.unescape(re.sub(r"</?p>", "", paragraph)).strip() == " ".join(text.split())
