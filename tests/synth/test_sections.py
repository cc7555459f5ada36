from __future__ import annotations

import pysbd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus_synth import sections
from chorus_synth.sections import DEFAULT_MAX_WORDS, split_sections


def words(sections_: list[str]) -> list[str]:
    return [w for s in sections_ for w in s.split()]


def assert_well_formed(text: str, result: list[str], max_words: int) -> None:
    assert words(result) == text.split()
    position = 0
    for section in result:
        assert section and section == section.strip()
        assert len(section.split()) <= max_words or len(section.split()) == 1
        # Each section is the document's own text, in order.
        position = text.index(section, position) + len(section)


# Tokens that stress the segmenter: abbreviations, numbers, clause and sentence punctuation, quotes,
# non-Latin scripts, and the placeholder characters pysbd uses internally (it drops text containing them).
TOKENS = st.one_of(
    st.sampled_from(
        "Mr. Dr. e.g. i.e. U.S. 3.5 p.m. No. 1. a. the cat sat, on; the: mat. Yes! Why? — – -- ... … "
        '"Hello," (aside) [1] 10:30 Straße naïve 東京。 Привет. ∯ ♨ ȸ &ᓰ& ✂ 😀'.split()
    ),
    st.text(st.characters(blacklist_categories=["Zs", "Zl", "Zp", "Cc", "Cs"]), min_size=1, max_size=8),
)
SEPARATORS = st.sampled_from(
    [" ", " ", " ", "\n", "\n\n", "\r\n", "\t", "  \n \n", "\u00a0", "\u2029", "\u3000"]
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(TOKENS, max_size=80))
    text = draw(st.sampled_from(["", " ", "\n"]))
    for token in tokens:
        text += token + draw(SEPARATORS)
    return text


@settings(max_examples=150, deadline=None)
@given(text=documents(), max_words=st.sampled_from([1, 5, DEFAULT_MAX_WORDS]))
def test_words_survive_in_order_and_sections_fit(text: str, max_words: int) -> None:
    assert_well_formed(text, split_sections(text, max_words), max_words)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=300),
    max_words=st.sampled_from([1, 5, DEFAULT_MAX_WORDS]),
    language=st.sampled_from(["en", "de", "es", "fr", "hi", "it", "ja", "pl", "ru", "zh", "ko", "pt", "tr"]),
)
def test_arbitrary_unicode_in_any_bark_language(text: str, max_words: int, language: str) -> None:
    assert_well_formed(text, split_sections(text, max_words, language=language), max_words)


def test_abbreviations_do_not_end_sentences() -> None:
    text = "Mr. Smith went to Washington. He arrived at 3.5 p.m. on Monday."
    assert split_sections(text) == [text]
    assert split_sections(text, 8) == ["Mr. Smith went to Washington.", "He arrived at 3.5 p.m. on Monday."]


def test_short_sentences_are_packed_greedily() -> None:
    text = "One two. Three four. Five six. Seven eight. Nine ten."
    assert split_sections(text, 5) == ["One two. Three four.", "Five six. Seven eight.", "Nine ten."]


def test_long_sentence_splits_at_commas() -> None:
    clauses = [" ".join(f"w{i}_{j}" for j in range(n)) for i, n in enumerate([12, 9, 14, 8, 11, 16])]
    text = ", ".join(clauses) + "."
    assert len(text.split()) == 70
    result = split_sections(text)
    assert result == [
        ", ".join(clauses[:2]) + ",", ", ".join(clauses[2:4]) + ",", ", ".join(clauses[4:]) + "."
    ]
    assert [len(s.split()) for s in result] == [21, 22, 27]


def test_long_clause_splits_into_balanced_pieces() -> None:
    text = " ".join(f"word{i}" for i in range(70)) + "."
    result = split_sections(text)
    assert [len(s.split()) for s in result] == [24, 23, 23]
    assert words(result) == text.split()
    assert [len(s.split()) for s in split_sections(" ".join(["w"] * 45))] == [23, 22]


def test_sentence_after_long_sentence_packs_with_its_tail() -> None:
    long_sentence = " ".join(["a"] * 20) + ", " + " ".join(["b"] * 15) + "."
    result = split_sections(long_sentence + " Short one.", 25)
    assert result == [" ".join(["a"] * 20) + ",", " ".join(["b"] * 15) + ". Short one."]


def test_recipe_with_newlines() -> None:
    text = (
        "Pancakes\n\n"
        "Ingredients:\n2 eggs\n1 cup flour\n1 cup milk\na pinch of salt\n\n"
        "Whisk the eggs and the milk. Add the flour slowly, stirring all the time.\n"
        "Rest the batter for 30 min. Fry in a hot pan.\n"
    )
    assert split_sections(text) == [
        "Pancakes",  # a paragraph break always ends a section
        "Ingredients:\n2 eggs\n1 cup flour\n1 cup milk\na pinch of salt",
        "Whisk the eggs and the milk. Add the flour slowly, stirring all the time.\n"
        "Rest the batter for 30 min. Fry in a hot pan.",
    ]
    # A list with no punctuation is split at its line ends rather than inside an item.
    assert split_sections(text, 6)[1:4] == [
        "Ingredients:\n2 eggs\n1 cup flour", "1 cup milk", "a pinch of salt"
    ]


def test_hard_wrapped_prose_splits_at_sentence_ends_not_line_ends() -> None:
    # pysbd alone would end a sentence at every newline (see test_pysbd_ends_sentences_at_newlines).
    text = (
        "It was the best of times, it was\nthe worst of times. "
        "It was the age\nof wisdom, it was the age of foolishness."
    )
    assert split_sections(text, 12) == [
        "It was the best of times, it was\nthe worst of times.",
        "It was the age\nof wisdom, it was the age of foolishness.",
    ]


def test_paragraphs_are_never_joined() -> None:
    text = '"Yes," he said.\n\n"No."\r\n\r\nFine.\u2029End.'
    assert split_sections(text) == ['"Yes," he said.', '"No."', "Fine.", "End."]


def test_whitespace_is_stripped_and_blank_text_gives_nothing() -> None:
    assert split_sections("  \n Hello there. \n\n\t ") == ["Hello there."]
    assert split_sections("") == []
    assert split_sections(" \n\n \t\u3000 ") == []


def test_one_word_per_section_and_overlong_tokens() -> None:
    assert split_sections("Mr. Smith, hello. Bye", 1) == ["Mr.", "Smith,", "hello.", "Bye"]
    token = "x" * 500
    assert split_sections(f"a {token} b", 1) == ["a", token, "b"]


@pytest.mark.parametrize("max_words", [0, -1])
def test_max_words_below_one_is_rejected(max_words: int) -> None:
    with pytest.raises(ValueError, match="max_words"):
        split_sections("Hello.", max_words)


def test_language_selects_sentence_rules_and_unknown_falls_back_to_english() -> None:
    text = "Ja. Am 3. Oktober kam er spät nach Hause."
    assert split_sections(text, 8, language="de") == ["Ja.", "Am 3. Oktober kam er spät nach Hause."]
    assert split_sections(text, 8, language="en") == ["Ja. Am 3.", "Oktober kam er spät nach Hause."]
    assert split_sections(text, 8, language="ko") == split_sections(text, 8, language="en")


def test_text_that_pysbd_drops_is_kept() -> None:
    text = "Hello ∯ world. Next ♨ one. Third ȸ here."
    assert words(split_sections(text, 3)) == text.split()


def test_long_paragraph_is_segmented_in_windows_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    sentence = "Sentence {} has e.g. some words, Mr. Jones said at 3.5 p.m. today."
    text = " ".join(sentence.format(i) for i in range(200))
    whole = split_sections(text, 20)
    monkeypatch.setattr(sections, "_WINDOW_CHARS", 150)
    assert split_sections(text, 20) == whole
    assert len(whole) == 200  # each 13-word sentence is its own section, never merged or cut


# pysbd's own behaviour that sections.py works around; these fail loudly if an upgrade changes it.


def test_pysbd_ends_sentences_at_newlines() -> None:
    segmented = pysbd.Segmenter(language="en").segment("the best of times,\nit was")
    assert segmented == ["the best of times,\n", "it was"]


def test_pysbd_spans_start_at_the_sentence_and_keep_trailing_whitespace() -> None:
    spans = pysbd.Segmenter(language="en", char_span=True).segment("  One.  Two. ")
    assert [(s.sent, s.start, s.end) for s in spans] == [("One.  ", 2, 8), ("Two. ", 8, 13)]


def test_pysbd_drops_text_with_its_placeholder_characters() -> None:
    assert pysbd.Segmenter(language="en").segment("Hello ∯ world. Next one.") == ["Next one."]


def test_pysbd_clean_rewrites_text_and_excludes_char_spans() -> None:
    assert pysbd.Segmenter(language="en", clean=True).segment("One.  Two.") == ["One.", "Two."]
    with pytest.raises(ValueError):
        pysbd.Segmenter(language="en", clean=True, char_span=True)


def test_pysbd_rejects_unknown_languages() -> None:
    with pytest.raises(ValueError):
        pysbd.Segmenter(language="ko")
