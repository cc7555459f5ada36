"""Synth endpoints: the fleet of synth servers as one pool of slots that jobs are pulled onto.

Pull model: an endpoint that is up offers `capacity` slots (GetServerInfo: the requests it runs at once). A call
takes whichever slot is free first, so an endpoint that finishes sooner frees its slots sooner and takes more
work; an endpoint never has more calls in flight than its capacity. A call waiting for a slot sleeps on one
event that every freed slot or change of the pool sets; the first waiter woken takes the slot.

Retry policy, per call (each attempt has the deadline `call_timeout_s`):
- INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE: the request itself is bad. PermanentSynthError at
  once; the endpoint answered correctly, so its failure count is left alone.
- Any other code is the endpoint's failure and the job is retried on an endpoint it has not tried yet when one is
  up (else on one it has tried), up to `max_attempts` attempts in all, then SynthUnavailable. This covers
  UNAVAILABLE (what a killed, crashed or unreachable server gives), DEADLINE_EXCEEDED (a hung one),
  RESOURCE_EXHAUSTED (its queue is full), CANCELLED (grpc.aio raises a cancel of our own as
  asyncio.CancelledError, so an AioRpcError CANCELLED always comes from the peer or the transport), and
  UNKNOWN/INTERNAL (a handler that crashed, a broken stream): treated as transient, since one endpoint's bug or
  crash says nothing about the request; a request that crashes every server ends as SynthUnavailable after
  `max_attempts`, and the queue's redelivery limit ends it for good.
- A success resets the endpoint's count of consecutive failures. At `failures_to_set_aside` it is set aside: its
  slots are withheld (calls in flight finish). Every `probe_every_s` the set-aside endpoints get a
  grpc.health.v1 Check of "chorus.synth.v1.Synth"; on SERVING, GetServerInfo is read again (it must be READY with
  capacity >= 1) and the endpoint rejoins with that capacity.
- With no endpoint up, a call waits up to `wait_for_endpoint_s` for one, then SynthUnavailable. Waiting for a busy
  slot while endpoints are up is not bounded by it: every call in flight ends by its deadline.

Targets are "host:port" ("[::1]:50051" for IPv6). A name that resolves to several addresses (a Kubernetes headless
Service) gives one endpoint per address, resolved again every `resolve_every_s`: new addresses join, vanished
ones take no new calls and their channel closes when their last call ends. A failed lookup keeps the addresses
known from the last one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chorus.synth.v1 import synth_pb2, synth_pb2_grpc

logger = logging.getLogger(__name__)

SYNTH_SERVICE = synth_pb2.DESCRIPTOR.services_by_name["Synth"].full_name
PERMANENT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
})
# Deadline of GetServerInfo and Health/Check: a blackholed address must not hold up start() or a probe round.
CONTROL_TIMEOUT_S = 5.0
# Most GetServerInfo/Check calls in flight at once during start, a re-resolution or a probe round.
CONTROL_CONCURRENCY = 16

# (host, port) -> the host's addresses; the default is getaddrinfo. Tests inject one at this seam.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class SynthError(Exception):
    """A Synthesize call that did not produce a clip."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, endpoint: str | None = None,
                 attempts: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.endpoint = endpoint
        self.attempts = attempts


class PermanentSynthError(SynthError):
    """The request itself is bad (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE): retrying
    cannot help."""


class SynthUnavailable(SynthError):
    """Attempts exhausted, no endpoint up within the wait, or the pool closed: transient, release the job for later."""


@dataclass(frozen=True)
class SynthResult:
    response: synth_pb2.SynthesizeResponse
    endpoint: str  # "host:port" that served it
    attempts: int  # 1 on first try


@dataclass
class EndpointState:
    address: str
    capacity: int
    in_flight: int
    up: bool
    consecutive_failures: int
    gpu_model: str
    served: int


def parse_target(target: str) -> tuple[str, int]:
    """"host:port" or "[v6 address]:port" -> (host, port)."""
    host, sep, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs brackets: "::1:50051" is ambiguous
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"synth target {target!r} is not host:port (IPv6 as [::1]:50051)")
    return host, int(port)


def endpoint_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _channel_target(host: str, port: int) -> str:
    # An address we resolved ourselves goes to gRPC as such, so that gRPC does not resolve (and balance) again.
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return f"dns:///{endpoint_address(host, port)}"
    return f"ipv{version}:{endpoint_address(host, port)}"


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address of `host` (an IP literal gives itself), in getaddrinfo's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _NotReady(Exception):
    """An endpoint that cannot take work now; the message says why."""


class _Endpoint:
    def __init__(self, host: str, port: int) -> None:
        self.address = endpoint_address(host, port)
        self.state = EndpointState(address=self.address, capacity=0, in_flight=0, up=False,
                                   consecutive_failures=0, gpu_model="", served=0)
        self.channel = grpc.aio.insecure_channel(_channel_target(host, port))
        self.synth = synth_pb2_grpc.SynthStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.leaving = False


class EndpointPool:
    def __init__(self, targets: Sequence[str], *, call_timeout_s: float = 120.0, max_attempts: int = 3,
                 failures_to_set_aside: int = 3, probe_every_s: float = 5.0, resolve_every_s: float = 30.0,
                 wait_for_endpoint_s: float = 60.0, resolve: Resolver = resolve_host) -> None:
        if not targets:
            raise ValueError("at least one synth target is needed")
        if max_attempts < 1 or failures_to_set_aside < 1:
            raise ValueError("max_attempts and failures_to_set_aside must be at least 1")
        self._targets = list(dict.fromkeys(parse_target(t) for t in targets))
        self._call_timeout_s = call_timeout_s
        self._max_attempts = max_attempts
        self._failures_to_set_aside = failures_to_set_aside
        self._probe_every_s = probe_every_s
        self._resolve_every_s = resolve_every_s
        self._wait_for_endpoint_s = wait_for_endpoint_s
        self._resolve = resolve
        self._resolved: dict[tuple[str, int], list[str]] = {}  # target -> its last addresses
        self._endpoints: dict[str, _Endpoint] = {}  # address -> endpoint, leaving ones excluded
        self._leaving: dict[str, _Endpoint] = {}  # gone from DNS, calls still in flight
        self._closing: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()  # set (and replaced) when a slot frees or an endpoint comes or goes
        self._closed = False

    @property
    def capacity(self) -> int:
        return sum(ep.state.capacity for ep in self._endpoints.values() if ep.state.up)

    @property
    def endpoints(self) -> list[EndpointState]:
        """A snapshot of every endpoint but those leaving (gone from DNS, finishing their calls)."""
        return [dataclasses.replace(ep.state) for ep in self._endpoints.values()]

    async def start(self) -> None:
        await self._refresh()
        self._tasks = [asyncio.create_task(self._probe_loop(), name="synth-endpoint-probes"),
                       asyncio.create_task(self._resolve_loop(), name="synth-endpoint-resolution")]
        logger.info("endpoint pool started: %d endpoint(s), %d up, capacity %d",
                    len(self._endpoints), sum(ep.state.up for ep in self._endpoints.values()), self.capacity)

    async def wait_until_capacity(self, timeout_s: float) -> int:
        """The pool's capacity once some endpoint is up, or 0 when none came up within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.capacity == 0 and not self._closed:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self.capacity

    async def synthesize(self, request: synth_pb2.SynthesizeRequest) -> SynthResult:
        tried: list[str] = []
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(1, self._max_attempts + 1):
            ep = await self._acquire(request.request_id, tried, last)
            try:
                response = await ep.synth.Synthesize(request, timeout=self._call_timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in PERMANENT_CODES:
                    raise PermanentSynthError(f"{ep.address} refused the request with {code.name}: {exc.details()}",
                                              code=code, endpoint=ep.address, attempts=attempt) from exc
                logger.warning("%s: attempt %d of %d on %s failed with %s", request.request_id, attempt,
                               self._max_attempts, ep.address, code.name, exc_info=exc)
                self._record_failure(ep, exc)
                tried.append(ep.address)
                last = exc
                continue
            except asyncio.CancelledError as exc:
                # Closing a channel cancels its calls, and grpc.aio raises that as CancelledError in our task.
                if self._closed and asyncio.current_task().cancelling() == 0:
                    raise SynthUnavailable("the endpoint pool closed during the call",
                                           endpoint=ep.address, attempts=attempt) from exc
                raise
            finally:
                self._release(ep)
            ep.state.served += 1
            ep.state.consecutive_failures = 0
            return SynthResult(response=response, endpoint=ep.address, attempts=attempt)
        assert last is not None
        raise SynthUnavailable(f"{self._max_attempts} attempt(s) failed, the last on {tried[-1]} with "
                               f"{last.code().name}", code=last.code(), endpoint=tried[-1],
                               attempts=self._max_attempts) from last

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._wake()
        for ep in [*self._endpoints.values(), *self._leaving.values()]:
            await ep.channel.close()  # cancels calls still in flight: they end as SynthUnavailable
        await asyncio.gather(*self._closing, return_exceptions=True)
        logger.info("endpoint pool closed")

    # -- slots ---------------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _pick(self, avoid: Iterable[str]) -> _Endpoint | None:
        up = [ep for ep in self._endpoints.values() if ep.state.up]
        untried = [ep for ep in up if ep.address not in avoid]
        free = [ep for ep in untried or up if ep.state.in_flight < ep.state.capacity]
        return max(free, key=lambda ep: ep.state.capacity - ep.state.in_flight, default=None)

    async def _acquire(self, request_id: str, tried: list[str],
                       last: grpc.aio.AioRpcError | None) -> _Endpoint:
        loop = asyncio.get_running_loop()
        none_up_since: float | None = None
        while True:
            if self._closed:
                raise SynthUnavailable("the endpoint pool is closed", attempts=len(tried))
            changed = self._changed  # taken before looking, so no wake-up is missed
            ep = self._pick(tried)
            if ep is not None:
                ep.state.in_flight += 1
                return ep
            timeout_s = None
            if self.capacity == 0:
                none_up_since = loop.time() if none_up_since is None else none_up_since
                timeout_s = self._wait_for_endpoint_s - (loop.time() - none_up_since)
                if timeout_s <= 0:
                    raise SynthUnavailable(
                        f"{request_id}: no synth endpoint up for {self._wait_for_endpoint_s} s",
                        code=last.code() if last else None, endpoint=tried[-1] if tried else None,
                        attempts=len(tried))
            else:
                none_up_since = None
            try:
                async with asyncio.timeout(timeout_s):
                    await changed.wait()
            except TimeoutError:
                pass

    def _release(self, ep: _Endpoint) -> None:
        ep.state.in_flight -= 1
        if ep.leaving and ep.state.in_flight == 0:
            self._close_later(ep)
        self._wake()

    def _record_failure(self, ep: _Endpoint, exc: grpc.aio.AioRpcError) -> None:
        state = ep.state
        state.consecutive_failures += 1
        if state.up and state.consecutive_failures >= self._failures_to_set_aside:
            state.up = False
            logger.warning("%s: set aside after %d consecutive failures, the last %s; pool capacity %d",
                           ep.address, state.consecutive_failures, exc.code().name, self.capacity, exc_info=exc)
            self._wake()

    # -- membership: resolution, admission, probes ---------------------------------------------------------------

    async def _refresh(self) -> None:
        for host, port in self._targets:  # a handful of targets: one lookup at a time
            try:
                self._resolved[(host, port)] = list(await self._resolve(host, port))
            except OSError:
                logger.warning("%s: lookup failed; keeping its %d known address(es)",
                               endpoint_address(host, port), len(self._resolved.get((host, port), [])),
                               exc_info=True)
        wanted = {endpoint_address(h, port): (h, port)
                  for (_, port), hosts in self._resolved.items() for h in hosts}
        for address in [a for a in self._endpoints if a not in wanted]:
            self._retire(self._endpoints.pop(address))
        joining = []
        for address, (host, port) in wanted.items():
            if address not in self._endpoints:
                ep = self._leaving.pop(address, None) or _Endpoint(host, port)
                ep.leaving = False
                self._endpoints[address] = ep
                joining.append(ep)
        await self._for_each(joining, self._admit)

    def _retire(self, ep: _Endpoint) -> None:
        ep.leaving, ep.state.up = True, False
        logger.info("%s: left (no longer resolved), %d call(s) still in flight", ep.address, ep.state.in_flight)
        self._leaving[ep.address] = ep
        if ep.state.in_flight == 0:
            self._close_later(ep)
        self._wake()

    def _close_later(self, ep: _Endpoint) -> None:
        if self._leaving.get(ep.address) is ep:
            del self._leaving[ep.address]
        if not self._closed:
            task = asyncio.create_task(ep.channel.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _admit(self, ep: _Endpoint) -> None:
        try:
            info = await self._ready_info(ep, check_health=False)
        except _NotReady as exc:
            logger.warning("%s: set aside from the start: %s", ep.address, exc, exc_info=exc)
            return
        self._bring_up(ep, info, "joined")

    async def _probe(self, ep: _Endpoint) -> None:
        try:
            info = await self._ready_info(ep, check_health=True)
        except _NotReady as exc:  # still set aside: no change, no log line above DEBUG
            logger.debug("%s: probe: %s", ep.address, exc, exc_info=exc)
            return
        self._bring_up(ep, info, "back after a probe")

    async def _ready_info(self, ep: _Endpoint, *, check_health: bool) -> synth_pb2.ServerInfo:
        try:
            if check_health:
                health = await ep.health.Check(health_pb2.HealthCheckRequest(service=SYNTH_SERVICE),
                                               timeout=CONTROL_TIMEOUT_S)
                if health.status != health_pb2.HealthCheckResponse.SERVING:
                    raise _NotReady(f"health is {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}")
            info = await ep.synth.GetServerInfo(synth_pb2.GetServerInfoRequest(), timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _NotReady(f"{exc.code().name} from {'Check' if check_health else 'GetServerInfo'}") from exc
        if info.state != synth_pb2.SERVER_STATE_READY or info.capacity < 1:
            raise _NotReady(f"server is {synth_pb2.ServerState.Name(info.state)} with capacity {info.capacity}")
        return info

    def _bring_up(self, ep: _Endpoint, info: synth_pb2.ServerInfo, why: str) -> None:
        state = ep.state
        if state.up or ep.leaving or self._closed:  # a probe and a re-resolution can race to admit it
            return
        state.capacity, state.consecutive_failures, state.up = info.capacity, 0, True
        state.gpu_model = info.devices[0].gpu_model if info.devices else ""
        logger.info("%s: up (%s): capacity %d on %s; pool capacity %d",
                    ep.address, why, state.capacity, state.gpu_model or "?", self.capacity)
        self._wake()

    async def _for_each(self, endpoints: Sequence[_Endpoint],
                        check: Callable[[_Endpoint], Awaitable[None]]) -> None:
        limit = asyncio.Semaphore(CONTROL_CONCURRENCY)

        async def bounded(ep: _Endpoint) -> None:
            async with limit:
                await check(ep)

        async with asyncio.TaskGroup() as group:
            for ep in endpoints:
                group.create_task(bounded(ep))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._probe_every_s)
            try:
                await self._for_each([ep for ep in self._endpoints.values() if not ep.state.up], self._probe)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("probe round failed")

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self._resolve_every_s)
            try:
                await self._refresh()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad round
                logger.exception("re-resolving synth targets failed")
