"""Read a text collection as documents: plain text files, JSON Lines, or the Food.com recipes export.

Every reader yields `Document`s whose id is 1-200 of ``A-Z a-z 0-9 . _ -`` starting with a letter or digit:
the orchestrator turns ids into S3 keys and, when clips are stitched, file names.

The Food.com export (``RAW_recipes.csv`` with ``RAW_interactions.csv``) is 230k recipes and 1.1M reviews: the
average ratings are counted in one pass over the reviews, then the recipes are streamed row by row.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import hashlib
import json
import os
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["CorpusError", "DEFAULT_MIN_RATING", "Document", "DOCUMENT_ID", "read_corpus", "read_jsonl",
           "read_recipes", "read_text_files", "recipe_script", "sanitize_id"]

DEFAULT_MIN_RATING = 4.5
DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

RECIPES_FILE = "RAW_recipes.csv"
INTERACTIONS_FILE = "RAW_interactions.csv"
_RECIPE_COLUMNS = ("name", "id", "minutes", "description", "steps", "n_steps", "submitted")
_INTERACTION_COLUMNS = ("recipe_id", "rating")


class CorpusError(ValueError):
    """An input that cannot be read as documents; the message names the file (and line) and what was wrong."""


@dataclasses.dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str | None = None
    metadata: dict[str, object] = dataclasses.field(default_factory=dict)


def read_corpus(paths: Iterable[str | os.PathLike[str]], *,
                min_rating: float = DEFAULT_MIN_RATING) -> Iterator[Document]:
    """Documents from every input, in the order given: ``.txt`` files, directories of ``.txt`` files, ``.jsonl``
    files, and ``RAW_recipes.csv`` (its ``RAW_interactions.csv`` is found beside it, or given as another input).

    The inputs are checked here, before anything is read, so a missing path or an unknown kind raises
    `CorpusError` (a ValueError) at once; a bad line further in raises it while iterating. A document id seen
    twice is an error: the second would overwrite the first one's clips.
    """
    readers = _plan(paths, min_rating=min_rating)
    return _unique(reader() for reader in readers)


def _plan(paths: Iterable[str | os.PathLike[str]], *, min_rating: float) -> list[Callable[[], Iterator[Document]]]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise CorpusError("no inputs given")
    kinds: list[tuple[str, Path]] = []
    for path in paths:
        if not path.exists():
            raise CorpusError(f"{path}: no such file or directory")
        kinds.append((_kind(path), path))
    interactions = [path for kind, path in kinds if kind == "interactions"]
    recipes = [path for kind, path in kinds if kind == "recipes"]
    if interactions and not recipes:
        raise CorpusError(f"{interactions[0]}: a ratings file needs its {RECIPES_FILE} as another input")
    readers: list[Callable[[], Iterator[Document]]] = []
    for kind, path in kinds:
        if kind == "text":
            readers.append(lambda path=path: read_text_files([path]))
        elif kind == "directory":
            files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
            if not files:
                raise CorpusError(f"{path}: directory has no .txt files")
            readers.append(lambda files=files: read_text_files(files))
        elif kind == "jsonl":
            readers.append(lambda path=path: read_jsonl(path))
        elif kind == "recipes":
            ratings = interactions or [path.with_name(INTERACTIONS_FILE)]
            if not ratings[0].is_file():
                raise CorpusError(f"{path}: no {INTERACTIONS_FILE} beside it; give the ratings file as another input")
            readers.append(lambda path=path, ratings=ratings: read_recipes(path, ratings, min_rating=min_rating))
    return readers


def _kind(path: Path) -> str:
    if path.is_dir():
        return "directory"
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "text"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".csv":
        columns = set(_csv_header(path))
        if columns.issuperset(_RECIPE_COLUMNS):
            return "recipes"
        if columns.issuperset(_INTERACTION_COLUMNS):
            return "interactions"
        raise CorpusError(f"{path}: a CSV file that is neither Food.com's {RECIPES_FILE} nor its {INTERACTIONS_FILE}")
    raise CorpusError(f"{path}: unknown kind of input; expected .txt, .jsonl, a directory of .txt files, "
                      f"or {RECIPES_FILE}")


def _unique(streams: Iterator[Iterator[Document]]) -> Iterator[Document]:
    seen: set[str] = set()
    for stream in streams:
        for document in stream:
            if document.id in seen:
                source = document.metadata.get("source")
                raise CorpusError(f"{source or 'input'}: document id {document.id!r} appears twice; "
                                  "each document needs its own id (its clips are stored under it)")
            seen.add(document.id)
            yield document


def sanitize_id(raw: str) -> str:
    """An id in the orchestrator's charset: accents dropped, runs of other characters turned into "-".

    A name with nothing usable left (all CJK, say) gets "doc-" and a hash of the name, so it stays unique.
    """
    bare = "".join(c for c in unicodedata.normalize("NFKD", raw) if not unicodedata.combining(c))
    cleaned = _NOT_ID_CHARS.sub("-", bare).strip("._-")[:200].rstrip("._-")
    if not cleaned:
        cleaned = "doc-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return cleaned


# --- plain text ------------------------------------------------------------------------------------------------


def read_text_files(paths: Iterable[Path]) -> Iterator[Document]:
    """One document per file: id from the file's stem, title the stem itself, the whole file as text."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        yield Document(id=sanitize_id(path.stem), text=text, title=path.stem, metadata={"source": str(path)})


# --- JSON Lines ------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterator[Document]:
    """One document per non-blank line: ``{"id": ..., "text": ..., "title": ...}``; other fields go to metadata."""
    with open(path, encoding="utf-8-sig") as lines:
        line_no = 0
        try:
            for line_no, line in enumerate(lines, 1):
                if line.strip():
                    yield _jsonl_document(path, line_no, line)
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}:{line_no + 1}: not UTF-8 text ({exc.reason})") from exc


def _jsonl_document(path: Path, line_no: int, line: str) -> Document:
    where = f"{path}:{line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: a JSON {type(record).__name__}, not an object with id and text")
    raw_id = record.pop("id", None)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
        raise CorpusError(f"{where}: \"id\" is missing or not a string or integer")
    if not DOCUMENT_ID.fullmatch(str(raw_id)):
        raise CorpusError(f"{where}: id {str(raw_id)[:50]!r} is not 1-200 of A-Z a-z 0-9 . _ - "
                          "(starting with a letter or digit)")
    text = record.pop("text", None)
    if not isinstance(text, str):
        raise CorpusError(f"{where}: \"text\" is missing or not a string")
    title = record.pop("title", None)
    if title is not None and not isinstance(title, str):
        raise CorpusError(f"{where}: \"title\" is not a string")
    return Document(id=str(raw_id), text=text, title=title, metadata=record)


# --- Food.com recipes ------------------------------------------------------------------------------------------

_FIRST = "First, "
_LAST = "Finally, "
_MIDDLE = ("Next, ", "Then, ", "After that, ", "Now, ", "Once that is done, ")
# A step that already starts with one of these reads badly after another transition.
_OWN_TRANSITIONS = frozenset({"then", "next", "finally", "first", "firstly", "lastly", "now", "meanwhile",
                              "afterwards", "afterward"})
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")
_SENTENCE_START = re.compile(r"(^|[.!?] )([a-z])")  # the export is all lower case
_LONGEST_MINUTES = 60 * 24 * 365  # the export has a few absurd times (2147483647 minutes): not read aloud


def read_recipes(recipes: Path, interactions: Iterable[Path], *,
                 min_rating: float = DEFAULT_MIN_RATING) -> Iterator[Document]:
    """Recipes whose average rating is at least ``min_rating``, each as a script to read aloud.

    A rating of 0 is a review left without stars on Food.com, so it does not count; a recipe nobody rated is
    left out.
    """
    ratings: dict[str, list[int]] = {}  # recipe id -> [sum, count]
    for path in interactions:
        _count_ratings(path, ratings)
    with _open_csv(recipes) as rows:
        reader = csv.reader(rows)
        header = next(reader, [])
        columns = {name: i for i, name in enumerate(header)}
        try:
            for row in reader:
                where = f"{recipes}:{reader.line_num}"
                if len(row) != len(header):
                    raise CorpusError(f"{where}: {len(row)} fields, the header has {len(header)}")
                recipe_id = row[columns["id"]].strip()
                total, count = ratings.get(recipe_id, (0, 0))
                if not count or total / count < min_rating:
                    continue
                yield _recipe_document(where, recipe_id, {name: row[i] for name, i in columns.items()},
                                       average_rating=total / count, ratings=count)
        except csv.Error as exc:
            raise CorpusError(f"{recipes}:{reader.line_num}: bad CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{recipes}:{reader.line_num}: not UTF-8 text ({exc.reason})") from exc


def _count_ratings(path: Path, ratings: dict[str, list[int]]) -> None:
    with _open_csv(path) as rows:
        reader = csv.reader(rows)
        header = next(reader, [])
        if not set(header).issuperset(_INTERACTION_COLUMNS):
            raise CorpusError(f"{path}: not a ratings file (needs columns {', '.join(_INTERACTION_COLUMNS)})")
        id_column, rating_column = header.index("recipe_id"), header.index("rating")
        try:
            for row in reader:
                try:
                    recipe_id, rating = row[id_column].strip(), int(row[rating_column])
                except (IndexError, ValueError) as exc:
                    raise CorpusError(f"{path}:{reader.line_num}: no recipe_id or integer rating") from exc
                if rating > 0:
                    entry = ratings.setdefault(recipe_id, [0, 0])
                    entry[0] += rating
                    entry[1] += 1
        except csv.Error as exc:
            raise CorpusError(f"{path}:{reader.line_num}: bad CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}:{reader.line_num}: not UTF-8 text ({exc.reason})") from exc


def _open_csv(path: Path):
    return open(path, encoding="utf-8-sig", newline="")


def _csv_header(path: Path) -> list[str]:
    try:
        with _open_csv(path) as rows:
            return next(csv.reader(rows), [])
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read a CSV header ({exc})") from exc


def _recipe_document(where: str, recipe_id: str, row: dict[str, str], *, average_rating: float,
                     ratings: int) -> Document:
    if not DOCUMENT_ID.fullmatch(recipe_id):
        raise CorpusError(f"{where}: recipe id {recipe_id[:50]!r} cannot be a document id")
    try:
        steps = ast.literal_eval(row["steps"] or "[]")
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise CorpusError(f"{where}: steps are not a Python list literal") from exc
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise CorpusError(f"{where}: steps are not a list of strings")
    try:
        minutes: int | None = int(row["minutes"])
    except ValueError:
        minutes = None
    name = _tidy(row["name"]) or f"Recipe {recipe_id}"
    name = name[:1].upper() + name[1:]
    text = recipe_script(recipe_id, name=name, minutes=minutes, description=row["description"], steps=steps)
    metadata: dict[str, object] = {"source": "food.com", "minutes": minutes, "n_steps": len(steps),
                                   "submitted": row["submitted"], "average_rating": round(average_rating, 3),
                                   "ratings": ratings}
    return Document(id=recipe_id, text=text, title=name, metadata=metadata)


def recipe_script(recipe_id: str, *, name: str, minutes: int | None, description: str, steps: list[str]) -> str:
    """The words read aloud for one recipe: a paragraph with the name and the time it takes, the description as
    a second, and the steps joined with transitions as a third. The transitions are drawn from a generator
    seeded with the recipe id, so a recipe always reads the same way."""
    intro = [_sentence(name)]
    if minutes is not None and 0 < minutes <= _LONGEST_MINUTES:
        intro.append(f"It takes about {_duration(minutes)}.")
    paragraphs = [" ".join(intro)]
    description = _tidy(description)
    if description:
        paragraphs.append(_sentence(_SENTENCE_START.sub(lambda m: m[1] + m[2].upper(), description)))
    steps = [step for step in map(_tidy, steps) if step]
    if steps:
        paragraphs.append(" ".join(_with_transitions(recipe_id, steps)))
    return "\n\n".join(paragraphs)


def _with_transitions(recipe_id: str, steps: list[str]) -> list[str]:
    # random.Random seeds a str through SHA-512: the same on every run and platform, unlike hash().
    rng = random.Random(f"food.com recipe {recipe_id}")
    sentences: list[str] = []
    previous = ""
    for i, step in enumerate(steps):
        if len(steps) == 1 or step.split(maxsplit=1)[0].strip(",.;:").lower() in _OWN_TRANSITIONS:
            transition = ""
        elif i == 0:
            transition = _FIRST
        elif i == len(steps) - 1:
            transition = _LAST
        else:
            transition = rng.choice([t for t in _MIDDLE if t != previous])
        previous = transition
        body = step if transition else step[:1].upper() + step[1:]
        sentences.append(_sentence(transition + body))
    return sentences


def _duration(minutes: int) -> str:
    if minutes < 60:
        return _count(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _count(hours, "hour") + (f" and {_count(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return _count(days, "day") + (f" and {_count(hours, 'hour')}" if hours else "")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _tidy(text: str) -> str:
    """One line, single spaces, no space before punctuation ("mix flour , sugar" in the export)."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."
