from __future__ import annotations

import json

import pytest

from chorus_orchestrator.jobs import PoisonJob, parse_job
from chorus_orchestrator.settings import parse_settings


def parse(body) -> object:
    return parse_job(body if isinstance(body, str) else json.dumps(body), max_text_chars=100)


def test_the_reference_job_parses_as_is():
    job = parse({"id": 537716, "voice": "v2/en_speaker_0", "script_section": "Mix the flour.", "section_index": 0,
                 "upload_url": "https://bucket.s3.amazonaws.com/537716/0.mp3?X-Amz-Signature=abc"})
    assert job.document_id == "537716" and job.section_index == 0 and job.text == "Mix the flour."
    assert job.voice == "v2/en_speaker_0" and job.upload_url.startswith("https://")
    assert job.encoding.name == "mp3" and job.name == "537716/0"


def test_chorus_fields_and_unknown_fields_are_kept():
    job = parse({"id": "doc-1", "script_section": "Hi.", "section_index": 2, "section_count": 5,
                 "output_key": "x/y.wav", "encoding": "wav", "document": {"title": "T"}, "rating": 4.8})
    assert (job.section_count, job.output_key, job.encoding.ext, job.document) == (5, "x/y.wav", "wav", {"title": "T"})
    assert job.extra == {"rating": 4.8}
    assert job.voice == ""


@pytest.mark.parametrize("body, fragment", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not an object"),
    ({"script_section": "Hi.", "section_index": 0}, "id"),
    ({"id": True, "script_section": "Hi.", "section_index": 0}, "id"),
    ({"id": "../etc", "script_section": "Hi.", "section_index": 0}, "id"),
    ({"id": 1, "section_index": 0}, "script_section"),
    ({"id": 1, "script_section": "   ", "section_index": 0}, "script_section"),
    ({"id": 1, "script_section": "x" * 101, "section_index": 0}, "at most 100"),
    ({"id": 1, "script_section": "Hi."}, "section_index"),
    ({"id": 1, "script_section": "Hi.", "section_index": -1}, "section_index"),
    ({"id": 1, "script_section": "Hi.", "section_index": "3"}, "section_index"),
    ({"id": 1, "script_section": "Hi.", "section_index": 3, "section_count": 3}, "section_count"),
    ({"id": 1, "script_section": "Hi.", "section_index": 0, "encoding": "aiff"}, "encoding"),
    ({"id": 1, "script_section": "Hi.", "section_index": 0, "upload_url": "file:///etc/passwd"}, "upload_url"),
    ({"id": 1, "script_section": "Hi.", "section_index": 0, "voice": 7}, "voice"),
])
def test_a_job_that_cannot_succeed_is_poison_with_a_reason(body, fragment):
    with pytest.raises(PoisonJob) as caught:
        parse(body)
    assert fragment in caught.value.reason


def test_settings_read_the_reference_names_and_flags_win():
    env = {"QUEUE_URL": "https://sqs/q", "CHORUS_TABLE": "t", "CHORUS_DLQ_URL": "https://sqs/d",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "CHORUS_SYNTH": "a:1, b:2"}
    settings = parse_settings(["--table", "t2", "--max-held", "7"], env=env)
    assert settings.command == "run" and settings.queue_url == "https://sqs/q"
    assert settings.synth == ("a:1", "b:2") and settings.table == "t2" and settings.max_held == 7
    assert settings.endpoint_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize("argv, fragment", [
    ([], "--queue-url"),
    (["--queue-url", "q", "--table", "t", "--dlq-url", "d"], "--synth"),
    (["--queue-url", "q", "--table", "t", "--synth", "a:1"], "--dlq-url"),
])
def test_missing_settings_are_named(argv, fragment, capsys):
    with pytest.raises(SystemExit):
        parse_settings(argv, env={})
    assert fragment in capsys.readouterr().err


def test_init_needs_no_synth():
    settings = parse_settings(["init", "--queue-url", "http://x/1/q", "--table", "t"], env={})
    assert settings.command == "init"
