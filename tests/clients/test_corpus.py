"""Readers: text files, JSON Lines and the Food.com recipes export (a 6-recipe sample in the real format)."""

from __future__ import annotations

import shutil

import pytest

from chorus_clients.corpus import DOCUMENT_ID, CorpusError, Document, read_corpus, recipe_script, sanitize_id

from .conftest import DATA

RECIPES = DATA / "RAW_recipes.csv"
INTERACTIONS = DATA / "RAW_interactions.csv"


def by_id(documents) -> dict[str, Document]:
    return {d.id: d for d in documents}


# --- text files ------------------------------------------------------------------------------------------------


def test_text_file_is_one_document():
    [document] = read_corpus([str(DATA / "texts" / "moby-dick.txt")])
    assert document.id == "moby-dick"
    assert document.title == "moby-dick"
    assert document.text == (DATA / "texts" / "moby-dick.txt").read_text(encoding="utf-8")
    assert document.metadata["source"].endswith("moby-dick.txt")


def test_directory_reads_its_txt_files_in_name_order():
    documents = list(read_corpus([DATA / "texts"]))
    assert [d.id for d in documents] == ["A-Tale-of-Two-Cities", "kase", "moby-dick"]  # notes.md is not text
    assert documents[0].title == "A Tale (of) Two Cities"
    assert documents[1].text == "Ein Text über Käse.\n"


@pytest.mark.parametrize(("stem", "expected"), [
    ("chapter-01", "chapter-01"),
    ("My Book (2nd ed.)", "My-Book-2nd-ed"),
    ("Ça, c’est complète", "Ca-c-est-complete"),
    ("...hidden", "hidden"),
    ("a" * 300, "a" * 200),
])
def test_sanitize_id(stem, expected):
    assert sanitize_id(stem) == expected


def test_sanitize_id_of_a_name_with_nothing_usable_is_a_stable_hash():
    assert sanitize_id("吾輩は猫である") == sanitize_id("吾輩は猫である") != sanitize_id("坊っちゃん")
    assert DOCUMENT_ID.fullmatch(sanitize_id("吾輩は猫である"))


def test_text_file_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="latin1.txt: not UTF-8"):
        list(read_corpus([path]))


# --- JSON Lines ------------------------------------------------------------------------------------------------


def test_jsonl_fields_title_and_metadata():
    documents = list(read_corpus([DATA / "documents.jsonl"]))  # a blank line in it is skipped
    assert documents == [
        Document("doc-1", "The first document. It is short.", "First", {"author": "Ann", "year": 1999}),
        Document("2", "The second document has no title.", None, {}),
        Document("doc.3", "Third.\n\nWith two paragraphs.", None, {"tags": ["a", "b"]}),
    ]


@pytest.mark.parametrize(("line", "problem"), [
    ('{"id": "x", "text": "unterminated', "not JSON"),
    ('["x", "text"]', "not an object"),
    ('{"text": "no id"}', '"id" is missing'),
    ('{"id": true, "text": "boolean id"}', '"id" is missing or not a string'),
    ('{"id": "has space", "text": "t"}', "is not 1-200 of"),
    ('{"id": "x"}', '"text" is missing'),
    ('{"id": "x", "text": "t", "title": 3}', '"title" is not a string'),
])
def test_jsonl_bad_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n\n' + line + "\n", encoding="utf-8")
    documents = read_corpus([path])
    assert next(documents).id == "a"  # lines before the bad one are read
    with pytest.raises(CorpusError, match=rf"bad\.jsonl:3: .*{problem}"):
        next(documents)


def test_duplicate_ids_are_an_error(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="'a' appears twice"):
        list(read_corpus([path]))


# --- inputs ----------------------------------------------------------------------------------------------------


def test_missing_path_is_an_error_at_once(tmp_path):
    with pytest.raises(ValueError, match="nope.txt: no such file or directory"):
        read_corpus([DATA / "documents.jsonl", tmp_path / "nope.txt"])


@pytest.mark.parametrize("name", ["notes.md", "table.csv"])
def test_unknown_kind_is_an_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{name}: "):
        read_corpus([path])


def test_directory_without_text_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="no .txt files"):
        read_corpus([tmp_path])


def test_inputs_are_read_in_the_order_given():
    documents = list(read_corpus([DATA / "documents.jsonl", DATA / "texts" / "moby-dick.txt"]))
    assert [d.id for d in documents] == ["doc-1", "2", "doc.3", "moby-dick"]


# --- Food.com recipes ------------------------------------------------------------------------------------------


def test_recipes_keep_those_rated_at_least_the_threshold():
    # 137739: 5, 5 and a 0 (a review without stars, not counted); 31490: 4.0; 112140: exactly 4.5;
    # 59389: never rated; 44061 and 5289: 5.
    assert [d.id for d in read_corpus([RECIPES])] == ["137739", "112140", "44061", "5289"]
    assert [d.id for d in read_corpus([RECIPES], min_rating=4.6)] == ["137739", "44061", "5289"]
    assert [d.id for d in read_corpus([RECIPES], min_rating=1)] == ["137739", "31490", "112140", "44061", "5289"]


def test_recipe_metadata():
    recipe = by_id(read_corpus([RECIPES]))["137739"]
    assert recipe.title == "Arriba baked winter squash mexican style"
    assert recipe.metadata == {"source": "food.com", "minutes": 55, "n_steps": 11, "submitted": "2005-09-16",
                               "average_rating": 5.0, "ratings": 2}


def test_recipe_script_reads_name_time_description_then_steps():
    recipe = by_id(read_corpus([RECIPES]))["137739"]
    intro, description, steps = recipe.text.split("\n\n")
    assert intro == "Arriba baked winter squash mexican style. It takes about 55 minutes."
    assert description == ("Autumn is my favorite time of year to cook! This recipe can be prepared either spicy or "
                           "sweet, your choice! Two of my posted mexican-inspired seasoning mix recipes are offered "
                           "as suggestions.")
    assert steps.startswith("First, make a choice and proceed with recipe. ")
    assert steps.endswith(" Finally, if desired, season with salt.")
    assert "depending on size of squash, cut into half or fourths." in steps  # no space before the comma
    sentences = steps.split(". ")
    assert len(sentences) == 11
    middle = {s.split(", ")[0] for s in sentences[1:-1]}
    assert len(middle) > 1 and middle <= {"Next", "Then", "After that", "Now", "Once that is done"}


def test_recipe_without_description_or_time():
    recipes = by_id(read_corpus([RECIPES]))
    assert recipes["112140"].text.split("\n\n")[0] == "All in the kitchen chili. It takes about 2 hours and 10 minutes."
    assert len(recipes["112140"].text.split("\n\n")) == 2  # no description
    assert recipes["5289"].text == "Apple a day milk shake.\n\nCombine ingredients in blender."  # 0 minutes, 1 step


@pytest.mark.parametrize(("minutes", "phrase"), [
    (1, "It takes about 1 minute."),
    (40, "It takes about 40 minutes."),
    (60, "It takes about 1 hour."),
    (61, "It takes about 1 hour and 1 minute."),
    (150, "It takes about 2 hours and 30 minutes."),
    (3000, "It takes about 2 days and 2 hours."),
])
def test_recipe_time(minutes, phrase):
    assert recipe_script("1", name="Toast", minutes=minutes, description="", steps=[]) == f"Toast. {phrase}"


@pytest.mark.parametrize("minutes", [None, 0, -5, 2147483647])
def test_recipe_time_left_out_when_missing_or_absurd(minutes):
    assert recipe_script("1", name="Toast", minutes=minutes, description="", steps=[]) == "Toast."


def test_recipe_step_with_its_own_transition_gets_no_other():
    text = recipe_script("7", name="Tea", minutes=5, description="", steps=["boil water", "then steep", "pour"])
    assert text.endswith("First, boil water. Then steep. Finally, pour.")


def test_recipe_transitions_are_deterministic_per_recipe():
    steps = [f"do step {i}" for i in range(12)]
    first = recipe_script("42", name="X", minutes=None, description="", steps=steps)
    assert recipe_script("42", name="X", minutes=None, description="", steps=steps) == first
    others = {recipe_script(str(i), name="X", minutes=None, description="", steps=steps) for i in range(10)}
    assert len(others) > 1  # the transitions vary from recipe to recipe
    assert list(read_corpus([RECIPES])) == list(read_corpus([RECIPES]))


def test_recipes_with_ratings_given_as_another_input(tmp_path):
    elsewhere = tmp_path / "ratings.csv"
    shutil.copy(INTERACTIONS, elsewhere)
    recipes = tmp_path / "recipes" / "RAW_recipes.csv"
    recipes.parent.mkdir()
    shutil.copy(RECIPES, recipes)
    with pytest.raises(CorpusError, match="no RAW_interactions.csv beside it"):
        read_corpus([recipes])
    assert [d.id for d in read_corpus([elsewhere, recipes])] == ["137739", "112140", "44061", "5289"]
    with pytest.raises(CorpusError, match="needs its RAW_recipes.csv"):
        read_corpus([elsewhere])


def test_recipe_with_bad_steps_names_file_and_line(tmp_path):
    shutil.copy(INTERACTIONS, tmp_path / "RAW_interactions.csv")
    lines = RECIPES.read_text(encoding="utf-8").splitlines(keepends=True)
    header, first = lines[0], "".join(lines[1:4])  # the first recipe's description spans three lines
    assert first.endswith(",7\n")
    (tmp_path / "RAW_recipes.csv").write_text(header + first.replace("['make a choice", "['make a choice'"),
                                              encoding="utf-8")
    with pytest.raises(CorpusError, match=r"RAW_recipes.csv:4: steps are not a Python list literal"):
        list(read_corpus([tmp_path / "RAW_recipes.csv"]))
