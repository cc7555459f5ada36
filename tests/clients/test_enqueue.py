"""`chorus enqueue`: documents to jobs, and jobs to real (moto) standard and FIFO queues.

Failures SQS cannot be made to produce on demand (an entry reported Failed, a throttled batch) are injected with
a before-call hook on the client: a handler that returns (http_response, parsed) answers instead of the server.
"""

from __future__ import annotations

import asyncio
import io
import json
import string
from collections import Counter, defaultdict

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chorus_clients import cli
from chorus_clients.corpus import CorpusError, Document, read_corpus
from chorus_clients.enqueue import (
    ENCODINGS,
    ENGLISH_VOICES,
    MAX_SECTION_CHARS,
    EnqueueError,
    choose_voice,
    document_jobs,
    enqueue_documents,
    job_body,
    print_jobs,
)
from chorus_orchestrator import jobs as orchestrator_jobs

from .conftest import DATA, REGION

INPUTS = [DATA / "texts", DATA / "documents.jsonl", DATA / "RAW_recipes.csv"]


def corpus() -> list[Document]:
    return list(read_corpus(INPUTS))


def dry_run_lines(documents, **options) -> list[str]:
    out = io.StringIO()
    print_jobs(documents, out, progress=False, **options)
    return out.getvalue().splitlines()


async def receive_all(sqs, queue_url: str, expected: int) -> list[dict]:
    """Every message, in the order received, deleting as it goes (a FIFO group stays locked while one is held)."""
    messages: list[dict] = []
    async with asyncio.timeout(20):
        while len(messages) < expected:
            response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                 MessageSystemAttributeNames=["MessageGroupId"])
            batch = response.get("Messages", [])
            messages += batch
            if batch:
                await sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert response.get("Messages", []) == [], "more messages than jobs"
    return messages


def inject(sqs, answer) -> list[list[dict]]:
    """Answer SendMessageBatch with answer(call_number, entries) -> (status, parsed), or None to let it through."""
    calls: list[list[dict]] = []

    def handler(params, **_):
        entries = json.loads(params["body"])["Entries"]
        calls.append(entries)
        answered = answer(len(calls), entries)
        if answered is None:
            return None
        status, parsed = answered
        parsed["ResponseMetadata"] = {"HTTPStatusCode": status}
        return AWSResponse(params["url"], status, {}, None), parsed

    sqs.meta.events.register("before-call.sqs.SendMessageBatch", handler)
    return calls


# --- jobs ------------------------------------------------------------------------------------------------------


def test_jobs_are_what_the_orchestrator_accepts():
    for document in corpus():
        jobs = document_jobs(document, max_words=12, seed=5, encoding="ogg_opus")
        assert jobs, document.id
        for index, job in enumerate(jobs):
            parsed = orchestrator_jobs.parse_job(job_body(job), max_text_chars=MAX_SECTION_CHARS)
            assert (parsed.document_id, parsed.section_index, parsed.section_count) == (document.id, index, len(jobs))
            assert parsed.encoding.name == "ogg_opus" and parsed.extra == {}
            assert parsed.text == job["script_section"] and len(parsed.text.split()) <= 12
            assert parsed.document == ({"title": document.title} if document.title else {}) | document.metadata


def test_encodings_are_the_orchestrators():
    assert set(ENCODINGS) == set(orchestrator_jobs.ENCODINGS)


def test_recipe_jobs_read_the_script_in_order():
    recipe = next(d for d in corpus() if d.id == "44061")
    jobs = document_jobs(recipe)
    assert jobs[0]["script_section"] == "Amish tomato ketchup for canning. It takes about 3 hours and 10 minutes."
    assert jobs[0]["document"]["title"] == "Amish tomato ketchup for canning"
    assert " ".join(j["script_section"] for j in jobs).split() == recipe.text.split()


_ALPHABET = st.sampled_from(list(string.ascii_letters + string.digits + " \n\t.,;:!?'\"-()") + ["é", "\u2014", "。"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(_ALPHABET, max_size=600), max_words=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_sections_keep_every_word_in_order_within_max_words(text, max_words, seed):
    document = Document("doc", text)
    jobs = document_jobs(document, max_words=max_words, seed=seed)
    assert [w for job in jobs for w in job["script_section"].split()] == text.split()
    assert all(len(job["script_section"].split()) <= max_words for job in jobs)
    assert [job["section_index"] for job in jobs] == list(range(len(jobs)))
    assert {job["section_count"] for job in jobs} <= {len(jobs)}
    assert len({job["voice"] for job in jobs}) <= 1


def test_words_too_long_together_are_split_again():
    words = [f"{i:02d}" + "x" * 60 for i in range(30)]  # 30 words: one section by count, 1889 characters
    jobs = document_jobs(Document("long-words", " ".join(words)), max_words=30)
    assert len(jobs) > 1 and all(len(j["script_section"]) <= MAX_SECTION_CHARS for j in jobs)
    assert [w for j in jobs for w in j["script_section"].split()] == words


def test_a_word_longer_than_a_job_names_the_document():
    with pytest.raises(EnqueueError, match=r"document 'giant': a single word of 1200 characters"):
        document_jobs(Document("giant", "Before. " + "x" * 1200 + " after."))


def test_document_id_the_orchestrator_refuses_is_an_error():
    with pytest.raises(EnqueueError, match="'has space': id is not"):
        document_jobs(Document("has space", "Some words."))


def test_document_without_words_has_no_jobs():
    assert document_jobs(Document("empty", " \n\n ")) == []


# --- voices ----------------------------------------------------------------------------------------------------


def test_fixed_voice_for_every_document():
    assert {j["voice"] for d in corpus() for j in document_jobs(d, voice="v2/de_speaker_1")} == {"v2/de_speaker_1"}


def test_seeded_voices_one_per_document_whatever_the_order():
    documents = [Document(f"doc-{i}", f"Document {i}. " * 40) for i in range(40)]

    def voices(docs, seed):
        result = {}
        for document in docs:
            jobs = document_jobs(document, max_words=10, seed=seed)
            assert len(jobs) > 1 and len({j["voice"] for j in jobs}) == 1  # one voice per document
            result[document.id] = jobs[0]["voice"]
        return result

    first = voices(documents, seed=7)
    assert voices(reversed(documents), seed=7) == first
    assert voices(documents[10:20], seed=7) == {d: first[d] for d in list(first)[10:20]}  # as with --limit
    assert set(first.values()) <= set(ENGLISH_VOICES) and len(set(first.values())) >= 5
    assert voices(documents, seed=8) != first
    assert all(choose_voice(d, seed=7) == v for d, v in first.items())


# --- sending ---------------------------------------------------------------------------------------------------


async def test_standard_queue_gets_exactly_the_dry_run_jobs(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    expected = dry_run_lines(corpus(), max_words=8, seed=3)
    stats = await enqueue_documents(sqs, queue_url, read_corpus(INPUTS), max_words=8, seed=3, progress=False)
    assert (stats.documents, stats.sections, stats.jobs_sent, stats.empty_documents) == (10, len(expected),
                                                                                         len(expected), 0)
    messages = await receive_all(sqs, queue_url, len(expected))
    assert Counter(m["Body"] for m in messages) == Counter(expected)


async def test_fifo_queue_keeps_each_documents_sections_in_order(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}.fifo", Attributes={"FifoQueue": "true"}))["QueueUrl"]
    documents = corpus()
    expected = dry_run_lines(documents, max_words=5, seed=3)
    stats = await enqueue_documents(sqs, queue_url, documents, max_words=5, seed=3, progress=False,
                                    batches_in_flight=4)
    assert stats.jobs_sent == len(expected) > 50
    messages = await receive_all(sqs, queue_url, len(expected))
    assert Counter(m["Body"] for m in messages) == Counter(expected)
    by_group: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        job = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == job["id"]
        by_group[job["id"]].append(job["section_index"])
    assert set(by_group) == {d.id for d in documents}
    assert all(indexes == list(range(len(indexes))) for indexes in by_group.values())


async def test_fifo_deduplicates_a_corpus_sent_twice(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}.fifo", Attributes={"FifoQueue": "true"}))["QueueUrl"]
    documents = list(read_corpus([DATA / "documents.jsonl"]))
    first = await enqueue_documents(sqs, queue_url, documents, progress=False)
    await enqueue_documents(sqs, queue_url, documents, progress=False)
    assert len(await receive_all(sqs, queue_url, first.jobs_sent)) == first.jobs_sent


async def test_entries_reported_failed_are_sent_again(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    expected = dry_run_lines(corpus(), max_words=8)

    def fail_first_call(call, entries):
        if call > 1:
            return None
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"} for e in entries]
        return 200, {"Successful": [], "Failed": failed}

    calls = inject(sqs, fail_first_call)
    stats = await enqueue_documents(sqs, queue_url, corpus(), max_words=8, progress=False, retry_base_s=0.01)
    assert stats.jobs_sent == len(expected)
    assert [e["Id"] for e in calls[0]] == [str(i) for i in range(10)]
    retried = [call for call in calls[1:] if call == calls[0]]
    assert retried, "the failed entries were sent again as they were"
    messages = await receive_all(sqs, queue_url, len(expected))
    assert Counter(m["Body"] for m in messages) == Counter(expected)


async def test_throttled_batch_is_sent_again(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    documents = list(read_corpus([DATA / "documents.jsonl"]))

    def throttle_first_call(call, entries):
        return (400, {"Error": {"Code": "RequestThrottled", "Message": "injected"}}) if call == 1 else None

    calls = inject(sqs, throttle_first_call)
    stats = await enqueue_documents(sqs, queue_url, documents, progress=False, retry_base_s=0.01)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert len(await receive_all(sqs, queue_url, stats.sections)) == stats.jobs_sent == stats.sections


async def test_entries_failing_every_time_give_up_after_max_attempts(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]

    def always_fail(call, entries):
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"} for e in entries]
        return 200, {"Successful": [], "Failed": failed}

    calls = inject(sqs, always_fail)
    documents = list(read_corpus([DATA / "documents.jsonl"]))
    with pytest.raises(EnqueueError, match="not sent after 3 attempts") as caught:
        await enqueue_documents(sqs, queue_url, documents, progress=False, max_attempts=3, retry_base_s=0.01,
                                batches_in_flight=1)
    assert len(calls) == 3
    assert any("before the error: 3 documents" in note for note in caught.value.__notes__)


async def test_entry_refused_for_our_fault_is_an_error(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]

    def refuse(call, entries):
        failed = [{"Id": "0", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "bad"}]
        return 200, {"Successful": [{"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": ""} for e in entries[1:]],
                     "Failed": failed}

    inject(sqs, refuse)
    with pytest.raises(EnqueueError, match="doc-1/0: InvalidMessageContents bad"):
        await enqueue_documents(sqs, queue_url, read_corpus([DATA / "documents.jsonl"]), progress=False)


async def test_missing_queue_is_an_error(sqs, moto_endpoint, unique):
    with pytest.raises(EnqueueError, match="SQS refused jobs") as caught:
        await enqueue_documents(sqs, f"{moto_endpoint}/123456789012/gone-{unique}",
                                read_corpus([DATA / "documents.jsonl"]), progress=False)
    assert caught.value.__cause__ is not None


# --- command ---------------------------------------------------------------------------------------------------


@pytest.fixture
def chorus(monkeypatch):
    """`chorus` with only this subcommand registered: the others are tested on their own."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("enqueue",))
    return cli.main


def test_cli_dry_run_prints_one_job_per_line(chorus, capsys):
    status = chorus(["enqueue", *map(str, INPUTS), "--dry-run", "--seed", "11", "--max-words", "9",
                     "--encoding", "wav"])
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines == dry_run_lines(corpus(), max_words=9, seed=11, encoding="wav")
    assert all(json.loads(line)["encoding"] == "wav" for line in lines)
    assert f"10 documents, {len(lines)} sections, {len(lines)} jobs printed (dry run)" in err


def test_cli_limit_reads_only_the_first_documents(chorus, capsys):
    assert chorus(["enqueue", str(DATA / "documents.jsonl"), str(DATA / "texts"), "--dry-run", "--limit", "4",
                   "--voice", "v2/en_speaker_9"]) == 0
    jobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert list(dict.fromkeys(j["id"] for j in jobs)) == ["doc-1", "2", "doc.3", "A-Tale-of-Two-Cities"]
    assert {j["voice"] for j in jobs} == {"v2/en_speaker_9"}


def test_cli_missing_input_exits_2(chorus, capsys, tmp_path):
    assert chorus(["enqueue", str(tmp_path / "missing.jsonl"), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "missing.jsonl: no such file or directory" in err


def test_cli_needs_a_queue_unless_dry_run(chorus, capsys):
    assert chorus(["enqueue", str(DATA / "documents.jsonl")]) == 2
    assert "--queue-url is required" in capsys.readouterr().err


def test_cli_sends_to_the_queue(chorus, capsys, moto_endpoint, unique):
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_endpoint)
    queue_url = sqs.create_queue(QueueName=f"jobs-{unique}")["QueueUrl"]
    argv = ["enqueue", str(DATA / "RAW_recipes.csv"), "--seed", "2", "--min-rating", "4.6"]
    assert chorus([*argv, "--dry-run"]) == 0
    expected = capsys.readouterr().out.splitlines()
    assert chorus([*argv, "--queue-url", queue_url, "--endpoint-url", moto_endpoint, "--region", REGION]) == 0
    out, err = capsys.readouterr()
    assert out == "" and f"3 documents, {len(expected)} sections, {len(expected)} jobs sent" in err
    bodies: list[str] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [m["Body"] for m in batch]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    assert Counter(bodies) == Counter(expected)


async def test_documents_without_words_are_counted_not_sent(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    documents = [Document("empty", "\n \n"), Document("one", "Just this.")]
    stats = await enqueue_documents(sqs, queue_url, documents, progress=False)
    assert (stats.documents, stats.empty_documents, stats.sections, stats.jobs_sent) == (2, 1, 1, 1)
    [message] = await receive_all(sqs, queue_url, 1)
    assert json.loads(message["Body"])["id"] == "one"
    assert await enqueue_documents(sqs, queue_url, [], progress=False) == type(stats)()


async def test_batches_stay_within_sqs_size_limit(sqs, unique):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    heavy = Document("heavy", "One. Two. Three.", metadata={"notes": "x" * 100_000})  # 3 jobs of ~100 KB each
    calls = inject(sqs, lambda call, entries: None)
    stats = await enqueue_documents(sqs, queue_url, [heavy], max_words=1, progress=False)
    assert stats.jobs_sent == 3 and [len(c) for c in calls] == [2, 1]
    assert len(await receive_all(sqs, queue_url, 3)) == 3
    with pytest.raises(EnqueueError, match="document 'huge': job huge/0 is .* bytes"):
        await enqueue_documents(sqs, queue_url, [Document("huge", "Hi.", metadata={"notes": "x" * 300_000})],
                                progress=False)


async def test_bad_input_midway_stops_with_what_was_sent(sqs, unique, tmp_path):
    queue_url = (await sqs.create_queue(QueueName=f"jobs-{unique}"))["QueueUrl"]
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "text": "Fine."}\n{"id": "b", "text": "Also fine."}\n{"id": "c"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus.jsonl:3: \"text\" is missing") as caught:
        await enqueue_documents(sqs, queue_url, read_corpus([path]), progress=False)
    assert any("before the error: 2 documents" in note for note in caught.value.__notes__)
