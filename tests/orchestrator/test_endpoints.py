"""EndpointPool against a real synth server (random:tiny on the CPU) and, for faults, fake ones on loopback."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import subprocess
import sys
import time
import wave

import grpc
import pytest

from chorus.synth.v1 import synth_pb2
from chorus_orchestrator.endpoints import (
    EndpointPool,
    PermanentSynthError,
    SynthResult,
    SynthUnavailable,
    parse_target,
)
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings

from .fakes import FakeSynth, Mode

LOGGER = "chorus_orchestrator.endpoints"


def request(job: int) -> synth_pb2.SynthesizeRequest:
    return synth_pb2.SynthesizeRequest(request_id=f"job-{job}", text="Hi.", voice="v2/en_speaker_6",
                                       settings=synth_pb2.GenerationSettings(max_seconds=0.3))


async def run_jobs(pool: EndpointPool, count: int) -> list[SynthResult]:
    # The pool bounds what is in flight; the test only holds `count` waiting calls.
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(pool.synthesize(request(job))) for job in range(count)]
    return [task.result() for task in tasks]


async def eventually(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def state_of(pool: EndpointPool, address: str):
    return next(s for s in pool.endpoints if s.address == address)


# The real server's capacity: one CPU replica with batches of up to 4.
REAL_CAPACITY = 4


@pytest.fixture(scope="module")
async def real_server():
    server = SynthServer(Settings(
        model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1",
        max_clip_seconds=0.5, max_batch=REAL_CAPACITY, workers="thread",
    ))
    await server.start()
    await eventually(lambda: server.state in (State.READY, State.FAILED), timeout_s=120)
    assert server.state is State.READY, server.state_message
    yield server
    await server.stop(grace_s=0)


@pytest.fixture
def real_address(real_server) -> str:
    return f"127.0.0.1:{real_server.port}"


class Fleet:
    """Fakes and pools a test opens; all of them are stopped and closed after it."""

    def __init__(self) -> None:
        self.fakes: list[FakeSynth] = []
        self.pools: list[EndpointPool] = []

    async def fake(self, host: str = "127.0.0.1", port: int = 0, **behaviour) -> FakeSynth:
        fake = FakeSynth(**behaviour)
        self.fakes.append(fake)
        return await fake.start(host, port)

    async def pool(self, targets: list[str], **options) -> EndpointPool:
        pool = EndpointPool(targets, **options)
        self.pools.append(pool)
        await pool.start()
        return pool


@pytest.fixture
async def fleet():
    fleet = Fleet()
    yield fleet
    for pool in fleet.pools:
        await pool.close()
    for fake in fleet.fakes:
        await fake.stop(0)


@pytest.fixture
def pool_log(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def log_lines(caplog, *parts: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and all(part in r.getMessage() for part in parts)]


@pytest.mark.parametrize(("target", "expected"), [
    ("synth-0.synth.chorus.svc:50051", ("synth-0.synth.chorus.svc", 50051)),
    ("10.0.0.7:1", ("10.0.0.7", 1)),
    ("[::1]:50051", ("::1", 50051)),
    ("[fd00::7]:65535", ("fd00::7", 65535)),
])
def test_parse_target(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["synth", "synth:", ":50051", "::1:50051", "synth:0", "synth:65536", "synth:x"])
def test_parse_target_refuses(target):
    with pytest.raises(ValueError, match="host:port"):
        parse_target(target)


async def test_real_server_by_name_serves_clips(real_server, real_address, fleet):
    # "localhost" goes through getaddrinfo: here it is 127.0.0.1 only (a ::1 would start set aside: nothing
    # listens there).
    pool = await fleet.pool([f"localhost:{real_server.port}"], call_timeout_s=60)
    real = state_of(pool, real_address)
    assert (real.up, real.capacity, real.gpu_model) == (True, REAL_CAPACITY, "cpu")
    assert pool.capacity == REAL_CAPACITY

    results = await run_jobs(pool, 3)

    for job, result in enumerate(results):
        assert (result.endpoint, result.attempts) == (real_address, 1)
        assert result.response.request_id == f"job-{job}"
        with wave.open(io.BytesIO(result.response.audio)) as clip:
            assert clip.getnframes() == result.response.sample_count > 0
            assert clip.getframerate() == result.response.sample_rate_hz
        assert 0 < result.response.duration_seconds <= 0.35
    assert state_of(pool, real_address).served == 3
    assert state_of(pool, real_address).in_flight == 0


async def test_never_more_in_flight_than_capacity(fleet):
    fake = await fleet.fake(capacity=2, delay_s=0.05)
    pool = await fleet.pool([fake.address])
    high_water = 0

    async def sample() -> None:
        nonlocal high_water
        while True:
            high_water = max(high_water, state_of(pool, fake.address).in_flight)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        results = await run_jobs(pool, 12)
    finally:
        sampler.cancel()

    assert high_water == 2
    assert fake.max_in_flight == 2
    assert {(r.endpoint, r.attempts) for r in results} == {(fake.address, 1)}
    final = state_of(pool, fake.address)
    assert (final.served, final.in_flight, final.capacity, final.gpu_model) == (12, 0, 2, "Fake GPU")


async def test_unavailable_endpoint_is_set_aside_and_rejoins(real_address, fleet, pool_log):
    # Refuses every call but says READY in GetServerInfo, so it starts up and takes work: the most free slots
    # win, so it is offered the first jobs.
    bad = await fleet.fake(mode=Mode.UNAVAILABLE, serving=False, capacity=8)
    pool = await fleet.pool([bad.address, real_address], call_timeout_s=60, failures_to_set_aside=2,
                            probe_every_s=0.1)
    assert pool.capacity == 8 + REAL_CAPACITY

    results = await run_jobs(pool, 4)

    assert {r.endpoint for r in results} == {real_address}
    assert bad.calls >= 2
    assert sum(r.attempts == 2 for r in results) == bad.calls  # each refused job was retried once, elsewhere
    aside = state_of(pool, bad.address)
    assert not aside.up and aside.consecutive_failures >= 2
    assert pool.capacity == REAL_CAPACITY
    await asyncio.sleep(0.3)  # probes see NOT_SERVING: it stays aside, and nothing more is logged
    assert len(log_lines(pool_log, bad.address, "set aside after")) == 1
    assert not state_of(pool, bad.address).up

    bad.mode = Mode.ANSWER
    await bad.set_serving(True)
    await eventually(lambda: state_of(pool, bad.address).up)
    assert pool.capacity == 8 + REAL_CAPACITY
    assert len(log_lines(pool_log, bad.address, "back after a probe")) == 1

    results = await run_jobs(pool, 4)
    assert {r.attempts for r in results} == {1}
    assert sum(r.endpoint == bad.address for r in results) == bad.answered >= 1
    assert state_of(pool, bad.address).consecutive_failures == 0


async def test_hung_endpoint_jobs_finish_elsewhere(fleet):
    # The survivor is a fake too: on 2 CPU cores the real server's own calls can outlast a 0.5 s deadline.
    hung = await fleet.fake(mode=Mode.HANG, capacity=2)
    good = await fleet.fake(delay_s=0.01, capacity=2)
    pool = await fleet.pool([hung.address, good.address], call_timeout_s=0.5)

    started = time.monotonic()
    results = await run_jobs(pool, 6)

    assert {r.endpoint for r in results} == {good.address}
    assert hung.calls >= 1
    assert sum(r.attempts == 2 for r in results) == hung.calls
    assert state_of(pool, hung.address).consecutive_failures == hung.calls
    assert time.monotonic() - started < 5  # one deadline, not a hang


async def test_killed_endpoint_jobs_are_retried(real_address, fleet, pool_log):
    doomed = await fleet.fake(mode=Mode.HANG, capacity=2)
    pool = await fleet.pool([doomed.address, real_address], call_timeout_s=60)

    jobs = asyncio.create_task(run_jobs(pool, 3))
    await asyncio.wait_for(doomed.call_started.wait(), 10)
    await doomed.stop(0)
    results = await jobs

    assert {r.endpoint for r in results} == {real_address}
    assert sum(r.attempts == 2 for r in results) == doomed.calls >= 1
    # A server stopped (or SIGKILLed) mid-call surfaces as UNAVAILABLE, not CANCELLED or INTERNAL.
    assert log_lines(pool_log, doomed.address, "failed with UNAVAILABLE")


async def test_faster_endpoint_serves_more(fleet):
    fast = await fleet.fake(delay_s=0.02, capacity=2)
    slow = await fleet.fake(delay_s=0.2, capacity=2)
    pool = await fleet.pool([slow.address, fast.address])

    results = await run_jobs(pool, 40)

    served = {address: sum(r.endpoint == address for r in results) for address in (fast.address, slow.address)}
    assert served[fast.address] + served[slow.address] == 40
    assert served[fast.address] > 3 * served[slow.address]
    assert served == {fast.address: fast.answered, slow.address: slow.answered}
    assert {r.attempts for r in results} == {1}


async def test_permanent_error_is_raised_at_once(fleet):
    refusing = await fleet.fake(mode=Mode.INVALID_ARGUMENT, capacity=2)
    other = await fleet.fake(capacity=2)
    pool = await fleet.pool([refusing.address, other.address], failures_to_set_aside=2)

    for _ in range(3):  # more than failures_to_set_aside: a bad request says nothing about the endpoint
        with pytest.raises(PermanentSynthError) as caught:
            await pool.synthesize(request(0))
        error = caught.value
        assert (error.code, error.endpoint, error.attempts) == (
            grpc.StatusCode.INVALID_ARGUMENT, refusing.address, 1)

    assert (refusing.calls, other.calls) == (3, 0)
    state = state_of(pool, refusing.address)
    assert state.up and state.consecutive_failures == 0


async def test_attempts_exhausted(fleet):
    refusing = await fleet.fake(mode=Mode.UNAVAILABLE, capacity=1)
    pool = await fleet.pool([refusing.address], max_attempts=3, failures_to_set_aside=5)

    with pytest.raises(SynthUnavailable) as caught:
        await pool.synthesize(request(0))

    error = caught.value
    assert (error.code, error.endpoint, error.attempts) == (grpc.StatusCode.UNAVAILABLE, refusing.address, 3)
    assert refusing.calls == 3  # the only endpoint: retried there


async def test_all_endpoints_down_then_one_comes_up(fleet):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    starting = await fleet.fake(serving=False, capacity=2)
    starting.state = synth_pb2.SERVER_STATE_STARTING
    targets = [f"127.0.0.1:{closed_port}", starting.address]
    pool = await fleet.pool(targets, wait_for_endpoint_s=0.3, probe_every_s=0.05)

    assert pool.capacity == 0
    assert [(s.address, s.up) for s in pool.endpoints] == [(target, False) for target in targets]
    assert await pool.wait_until_capacity(0.1) == 0
    started = time.monotonic()
    with pytest.raises(SynthUnavailable):
        await pool.synthesize(request(0))
    assert 0.3 <= time.monotonic() - started < 3

    starting.state = synth_pb2.SERVER_STATE_READY
    await starting.set_serving(True)
    assert await pool.wait_until_capacity(5) == 2
    result = await pool.synthesize(request(1))
    assert (result.endpoint, result.attempts) == (starting.address, 1)


async def test_name_with_several_addresses(fleet):
    # localhost resolves to 127.0.0.1 only here, so the name is resolved by a stub at the pool's resolver seam;
    # two fakes listen on the same port on 127.0.0.1 and ::1, as two pods behind a headless Service would.
    v4 = await fleet.fake(delay_s=0.05, capacity=1)
    v6 = await fleet.fake(host="::1", port=v4.port, delay_s=0.05, capacity=1)
    records = {"synth.chorus.svc": ["127.0.0.1", "::1"]}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return records[host]

    pool = await fleet.pool([f"synth.chorus.svc:{v4.port}"], resolve=resolve, resolve_every_s=0.05)
    assert v6.address == f"[::1]:{v4.port}"
    assert sorted((s.address, s.up) for s in pool.endpoints) == sorted([(v4.address, True), (v6.address, True)])
    assert pool.capacity == 2

    results = await run_jobs(pool, 4)
    assert {r.endpoint for r in results} == {v4.address, v6.address}

    # A vanished address takes no new calls but its call in flight finishes.
    v6.delay_s = 0.5
    v6.call_started.clear()
    jobs = asyncio.create_task(run_jobs(pool, 2))
    await asyncio.wait_for(v6.call_started.wait(), 5)
    records["synth.chorus.svc"] = ["127.0.0.1"]
    await eventually(lambda: [s.address for s in pool.endpoints] == [v4.address])
    assert sorted(r.endpoint for r in await jobs) == sorted([v4.address, v6.address])
    assert {s.address for s in pool.endpoints} == {v4.address}

    # A failed lookup keeps what is known; a new address joins.
    del records["synth.chorus.svc"]
    await asyncio.sleep(0.2)
    assert [s.address for s in pool.endpoints] == [v4.address]
    records["synth.chorus.svc"] = ["127.0.0.1", "::1"]
    await eventually(lambda: pool.capacity == 2)


async def test_ipv6_literal_target(fleet):
    fake = await fleet.fake(host="::1", capacity=1)
    pool = await fleet.pool([fake.address])
    result = await pool.synthesize(request(0))
    assert (result.endpoint, result.attempts) == (f"[::1]:{fake.port}", 1)


async def test_close_ends_calls_and_probes(fleet):
    hung = await fleet.fake(mode=Mode.HANG, capacity=1)
    pool = await fleet.pool([hung.address], probe_every_s=0.05)
    call = asyncio.create_task(pool.synthesize(request(0)))
    waiting = asyncio.create_task(pool.synthesize(request(1)))  # no free slot: waits
    await asyncio.wait_for(hung.call_started.wait(), 5)

    await pool.close()

    for task in (call, waiting):
        with pytest.raises(SynthUnavailable):
            await task
    with pytest.raises(SynthUnavailable):
        await pool.synthesize(request(2))
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("synth-endpoint")]


def test_module_does_not_import_the_synth_side():
    code = ("import sys, chorus_orchestrator.endpoints; "
            "print(sorted(m for m in ('torch', 'chorus_synth', 'transformers') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
