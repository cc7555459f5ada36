"""A job: one section of one document, as one SQS message, in the reference's JSON form.

    {"id": 537716, "voice": "v2/en_speaker_0", "script_section": "...", "section_index": 0, "upload_url": "..."}

Chorus adds optional `section_count`, `output_key`, `encoding` and `document`; any other field is kept in `extra`
and recorded with the result, never rejected.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping

from chorus.synth.v1 import synth_pb2 as pb

KNOWN_FIELDS = frozenset(
    {"id", "voice", "script_section", "section_index", "upload_url", "section_count", "output_key", "encoding",
     "document"}
)
# Document ids become S3 key segments and, when stitched, file names.
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclasses.dataclass(frozen=True)
class OutputEncoding:
    name: str
    proto: int
    ext: str
    content_type: str


ENCODINGS = {
    e.name: e
    for e in (
        OutputEncoding("mp3", pb.AUDIO_ENCODING_MP3, "mp3", "audio/mpeg"),
        OutputEncoding("wav", pb.AUDIO_ENCODING_WAV, "wav", "audio/wav"),
        OutputEncoding("ogg_opus", pb.AUDIO_ENCODING_OGG_OPUS, "ogg", "audio/ogg"),
        OutputEncoding("flac", pb.AUDIO_ENCODING_FLAC, "flac", "audio/flac"),
    )
}


class PoisonJob(Exception):
    """A message that can never become a clip as it is; `reason` says why (it goes to the dead-letter queue)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Job:
    document_id: str
    section_index: int
    text: str
    voice: str
    encoding: OutputEncoding
    upload_url: str | None = None
    section_count: int | None = None
    output_key: str | None = None
    document: Mapping[str, object] | None = None
    extra: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """How logs and synth request ids name the job."""
        return f"{self.document_id}/{self.section_index}"


def parse_job(body: str, *, max_text_chars: int, default_encoding: str = "mp3") -> Job:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoisonJob(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PoisonJob(f"body is JSON {type(data).__name__}, not an object")

    raw_id = data.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
        raise PoisonJob("id is missing or not a number or string")
    document_id = str(raw_id)
    if not _DOCUMENT_ID.fullmatch(document_id):
        raise PoisonJob(f"id {document_id[:50]!r} is not 1-200 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")

    text = data.get("script_section")
    if not isinstance(text, str) or not text.strip():
        raise PoisonJob("script_section is missing or blank")
    if len(text) > max_text_chars:
        raise PoisonJob(f"script_section is {len(text)} characters; at most {max_text_chars} are allowed")

    index = data.get("section_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise PoisonJob(f"section_index is {index!r}; it must be an integer >= 0")

    count = data.get("section_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count <= index):
        raise PoisonJob(f"section_count is {count!r}; it must be an integer greater than section_index ({index})")

    voice = data.get("voice", "")
    if not isinstance(voice, str):
        raise PoisonJob("voice is not a string")

    encoding_name = data.get("encoding", default_encoding)
    if encoding_name not in ENCODINGS:
        raise PoisonJob(f"encoding is {encoding_name!r}; supported: {', '.join(ENCODINGS)}")

    upload_url = data.get("upload_url")
    if upload_url is not None and (not isinstance(upload_url, str) or not upload_url.startswith(("https://", "http://"))):
        raise PoisonJob("upload_url is not an http(s) URL")

    output_key = data.get("output_key")
    if output_key is not None and (not isinstance(output_key, str) or not output_key or output_key.startswith("/")):
        raise PoisonJob("output_key must be a non-empty string not starting with /")

    document = data.get("document")
    if document is not None and not isinstance(document, dict):
        raise PoisonJob("document must be a JSON object")

    return Job(
        document_id=document_id,
        section_index=index,
        text=text,
        voice=voice,
        encoding=ENCODINGS[encoding_name],
        upload_url=upload_url or None,
        section_count=count,
        output_key=output_key,
        document=document,
        extra={k: v for k, v in data.items() if k not in KNOWN_FIELDS},
    )
