"""Split a document into sections: sentence-aware runs of at most ``max_words`` words.

Bark reads about 13 s of speech per clip, roughly 30 English words, so every section must stay within
``max_words`` whitespace-separated words. Splitting prefers, in order: paragraph breaks (a blank line; a
section never spans one), sentence ends (found by pysbd), clause punctuation, line breaks, and only then
arbitrary word boundaries. Inside a paragraph, neighbouring pieces are packed greedily so short sentences
are not read as tiny clips of their own.

Every section is a stripped, verbatim substring of the document, and the sections keep every word in
order: ``[w for s in sections for w in s.split()] == text.split()``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pysbd

__all__ = ["DEFAULT_MAX_WORDS", "split_sections"]

DEFAULT_MAX_WORDS = 30

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n|\u2029")  # a blank line (also "\r\n\r\n")
_WORD = re.compile(r"\S+")  # \S is exactly the complement of str.isspace(), so this agrees with str.split()
_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# One-for-one, so offsets into the flattened paragraph are offsets into the original.
_FLATTEN = str.maketrans("\n\r\v\f\x1c\x1d\x1e\x85\u2028", " " * 9)
_CLAUSE_END = tuple(",;:\u2014\u2013\u2015\u2026\u060c\u061b\u3001\uff0c\uff1a\uff1b") + ("--",)
_CLOSERS = "\"')]}\u00bb\u201d\u2019\u203a\u300d\u300f"
# pysbd's cost grows faster than linearly with its input, so long paragraphs are fed in windows.
_WINDOW_CHARS = 2000

Span = tuple[int, int]  # [start, end): character offsets of a word, or word indices of a piece


def split_sections(text: str, max_words: int = DEFAULT_MAX_WORDS, *, language: str = "en") -> list[str]:
    """Split ``text`` into sections of at most ``max_words`` words (a single longer token stands alone).

    ``language`` is an ISO 639-1 code ("de" for the "v2/de_speaker_1" voice preset). It only selects
    pysbd's sentence rules (abbreviations and the like); a language pysbd has no rules for (e.g. "ko",
    "pt", "tr") is segmented with the English rules. Blank text gives ``[]``.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    try:
        # A new Segmenter per call: segment() keeps the text on the instance, so sharing one across
        # threads is unsafe. Constructing one is cheap; unknown languages raise ValueError.
        segmenter = pysbd.Segmenter(language=language, clean=False, char_span=True)
    except ValueError:
        segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
    sections: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        words = [m.span() for m in _WORD.finditer(paragraph)]
        if not words:
            continue
        spans = [(0, len(words))]
        if len(words) > max_words:  # a short paragraph needs no sentence segmentation at all
            spans = _Splitter(segmenter, paragraph, words, max_words).split(0, len(words), level=0)
        sections.extend(paragraph[words[lo][0] : words[hi - 1][1]] for lo, hi in spans)
    return sections


class _Splitter:
    """Splits one paragraph's words into spans, trying one kind of boundary per level."""

    def __init__(self, segmenter: pysbd.Segmenter, paragraph: str, words: list[Span], max_words: int):
        self.paragraph = paragraph
        self.words = words
        self.max_words = max_words
        self.sentence_starts = _sentence_starts(segmenter, paragraph)
        # Each predicate says whether a piece may start at word i (i > 0).
        self.levels: list[Callable[[int], bool]] = [
            self._sentence_start, self._after_clause, self._after_line
        ]

    def split(self, lo: int, hi: int, level: int) -> list[Span]:
        n = hi - lo
        if n <= self.max_words:
            return [(lo, hi)]
        if level == len(self.levels):
            # No boundary left: balanced pieces (45 words at 30 -> 23 + 22, not 30 + 15).
            k = -(-n // self.max_words)
            cuts = [lo + -(-n * j // k) for j in range(k + 1)]
            return list(zip(cuts, cuts[1:]))
        allowed = self.levels[level]
        cuts = [lo, *(i for i in range(lo + 1, hi) if allowed(i)), hi]
        packed: list[Span] = []
        for a, b in zip(cuts, cuts[1:]):
            for start, end in self.split(a, b, level + 1):
                if packed and end - packed[-1][0] <= self.max_words:
                    packed[-1] = (packed[-1][0], end)
                else:
                    packed.append((start, end))
        return packed

    def _sentence_start(self, i: int) -> bool:
        return self.words[i][0] in self.sentence_starts

    def _after_clause(self, i: int) -> bool:
        start, end = self.words[i - 1]
        return self.paragraph[start:end].rstrip(_CLOSERS).endswith(_CLAUSE_END)

    def _after_line(self, i: int) -> bool:
        return _LINE_BREAK.search(self.paragraph, self.words[i - 1][1], self.words[i][0]) is not None


def _sentence_starts(segmenter: pysbd.Segmenter, paragraph: str) -> set[int]:
    """Offsets in ``paragraph`` where pysbd sees a sentence begin; used as hints, never as text.

    pysbd ends a sentence at every newline, which would cut hard-wrapped prose at each line, so it gets
    the paragraph with line breaks turned into spaces. It can also drop or rewrite sentences (text that
    contains its placeholder characters such as "∯"), which is why only its offsets are used.
    """
    flat = paragraph.translate(_FLATTEN)
    starts: set[int] = set()
    offset = 0
    while offset < len(flat):
        end = len(flat)
        if end - offset > _WINDOW_CHARS:
            end = flat.rfind(" ", offset + 1, offset + _WINDOW_CHARS) + 1 or offset + _WINDOW_CHARS
        spans = segmenter.segment(flat[offset:end])
        starts.update(offset + s.start for s in spans)
        if end == len(flat):
            break
        # The window may have cut the last sentence short: start the next window at its beginning.
        # A single sentence longer than the window keeps the window's edge as a sentence end.
        last = offset + spans[-1].start if spans else offset
        offset = last if last > offset else end
    return starts
