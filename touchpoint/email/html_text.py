"""Turn an email's HTML into a readable plain-text part.

Deliberately small: emails are simple documents, and the text part only has to be
readable in a text-only client, not a faithful rendering.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

# Hidden from readers: their text content is code or metadata.
_SKIP = frozenset({"head", "style", "script", "title", "template", "noscript"})
# Paragraph-like: a blank line before and after.
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre", "ul", "ol", "dl", "figure", "address", "hr"}
)
# Line-like: start on a new line.
_LINE = frozenset(
    {
        "div",
        "li",
        "tr",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "nav",
        "aside",
        "dt",
        "dd",
        "center",
        "caption",
        "body",
        "html",
        "form",
        "fieldset",
    }
)
_CELL = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        # One entry per open <ul>/<ol>: the next item number, or None for bullets.
        self._lists: list[int | None] = []
        # One entry per open <a>: its href and where its label starts in _out.
        self._links: list[tuple[str | None, int]] = []

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self._out).split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")

    def _tail(self) -> str:
        # Enough of the end of the output to decide about spaces and newlines.
        tail = ""
        for chunk in reversed(self._out):
            tail = chunk + tail
            if len(tail) >= 2:
                break
        return tail

    def _break(self, newlines: int) -> None:
        """End the current line and leave ``newlines - 1`` blank lines (none at the top)."""
        if not self._out:
            return
        tail = self._tail().rstrip(" ")
        have = len(tail) - len(tail.rstrip("\n"))
        if have < newlines:
            self._out.append("\n" * (newlines - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "br":
            self._out.append("\n")
        elif tag in ("ul", "ol"):
            # A nested list continues its parent item's block.
            self._break(1 if self._lists else 2)
            self._lists.append(1 if tag == "ol" else None)
        elif tag in _PARAGRAPH:
            self._break(2)
            if tag == "hr":
                self._out.append("----")
                self._break(2)
            elif tag == "pre":
                self._pre_depth += 1
        elif tag == "li":
            self._break(1)
            indent = "  " * max(len(self._lists) - 1, 0)
            number = self._lists[-1] if self._lists else None
            if number is None:
                self._out.append(f"{indent}- ")
            else:
                self._out.append(f"{indent}{number}. ")
                self._lists[-1] = number + 1
        elif tag in _LINE:
            self._break(1)
        elif tag in _CELL:
            tail = self._tail()
            if tail and not tail.endswith(("\n", " ")):
                self._out.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self._out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(self._skip_depth - 1, 0)
            return
        if self._skip_depth:
            return
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self._out[start:]).strip()
            target = _link_target(href, label)
            if target:
                self._out.append(f" ({target})" if label else target)
        elif tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._break(1 if self._lists else 2)
        elif tag == "pre":
            self._pre_depth = max(self._pre_depth - 1, 0)
            self._break(2)
        elif tag in _PARAGRAPH:
            self._break(2)
        elif tag in _LINE:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self._out.append(data)
            return
        text = _SPACES.sub(" ", data)
        tail = self._tail()
        if not tail or tail.endswith(("\n", " ")):
            text = text.lstrip(" ")
        if text:
            self._out.append(text)


def _link_target(href: str | None, label: str) -> str | None:
    """What to print after a link's label, or None when the label already says it."""
    if not href:
        return None
    href = href.strip()
    if href.startswith(("#", "javascript:")):
        return None
    shown = href.removeprefix("mailto:").removeprefix("tel:")
    if shown in label or href in label:
        return None
    return href


def html_to_text(html: str) -> str:
    """Convert an HTML email body to plain text.

    Block elements become line breaks, ``<a href="x">label</a>`` becomes ``label (x)``, list
    items become ``- item`` (numbered in ``<ol>``), ``<head>``, ``<style>`` and ``<script>``
    are dropped, entities are unescaped and runs of blank lines collapse to one.

    Args:
        html: The HTML document or fragment.

    Returns:
        The text, without leading or trailing blank lines.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()
