"""Plain sentences out of MediaWiki markup and news text (the entity-rich prose we distil on).

Tweets are short, noisy and name games and brands in all-caps; the teacher is erratic on them.
Encyclopaedia and news prose is where its OntoNotes training holds, and it is what the news
topic carries. :func:`wiki_sentences` turns a MediaWiki XML dump into sentences (templates,
tables, references, files and categories dropped; links kept as their text) and
:func:`sentences` splits paragraphs.

>>> wikitext_paragraphs("'''Alan Turing''' worked at [[Bletchley Park|Bletchley]]{{cite|x}}."
...                     "<ref>Hodges</ref>\\n== Life ==\\n* a list item\\n[[Category:People]]")
['Alan Turing worked at Bletchley.']
>>> sentences("He met Dr. Smith in Paris. They spoke of U.S. trade and left. Too short.", min_words=3)
['He met Dr. Smith in Paris.', 'They spoke of U.S. trade and left.']
"""

from __future__ import annotations

import bz2
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["sentences", "wiki_sentences", "wikitext_paragraphs"]

# A sentence ends at . ! or ? followed by space and a capital, quote or bracket, unless the
# word before is a title or initial ("Dr. Smith", "J. Smith") or a dotted abbreviation ("U.S.").
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_NO_BREAK_AFTER = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Mt|Gen|Gov|Sen|Rep|Lt|Col|Capt|Jr|Sr|Inc|Co|"
                             r"Corp|Ltd|No|vs|etc|ca|approx)\.|\b[A-Z]\.|\b(?:[A-Za-z]\.){2,})$")


def _innermost(pattern: str, text: str, repl: str | Callable[[re.Match], str] = "") -> str:
    # Nested markup ({{a|{{b}}}}) is removed from the inside out.
    rx = re.compile(pattern, re.S)
    while True:
        new = rx.sub(repl, text)
        if new == text:
            return text
        text = new


def _link(m: re.Match) -> str:
    target, _, label = m.group(1).partition("|")
    if ":" in target and not target.startswith(":"):
        return ""  # File:, Image:, Category:, interwiki
    return (label or target).split("|")[-1]


def wikitext_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one article's wikitext: no headings, lists, tables or markup."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = _innermost(r"\{\{[^{}]*\}\}", text)
    text = _innermost(r"\{\|[^{}]*?\|\}", text)
    text = _innermost(r"\[\[([^\[\]]*)\]\]", text, _link)
    text = re.sub(r"\[https?://\S+\s([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = html.unescape(text).replace("\xa0", " ")
    out = []
    for line in text.split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if line and line[0] not in "*#:;|!={}" and not any(c in line for c in "{}[]|"):
            out.append(line)
    return out


def sentences(paragraph: str, *, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Sentences of ``min_words`` to ``max_words`` words ending in . ! ? or a closing quote."""
    parts: list[str] = []
    for piece in _BOUNDARY.split(paragraph):
        if parts and _NO_BREAK_AFTER.search(parts[-1]):
            parts[-1] += " " + piece
        else:
            parts.append(piece)
    return [s.strip() for s in parts
            if min_words <= len(s.split()) <= max_words and s.strip()[-1:] in ".!?\"'"]


def wiki_sentences(dump: Path) -> Iterator[tuple[str, str]]:
    """``(article title, sentence)`` for every article (not redirect) of a ``.xml.bz2`` dump."""
    opener = bz2.open if dump.suffix == ".bz2" else open
    with opener(dump, "rb") as fh:
        for _, element in ET.iterparse(fh):
            if element.tag.rpartition("}")[2] != "page":
                continue
            title = element.findtext("{*}title") or ""
            text = element.findtext(".//{*}text") or ""
            element.clear()
            if text.lstrip().upper().startswith("#REDIRECT"):
                continue
            for paragraph in wikitext_paragraphs(text):
                for sentence in sentences(paragraph):
                    yield title, sentence
