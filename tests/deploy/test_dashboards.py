"""Prometheus and Grafana as shipped in deploy/: promtool's approval, Grafana's provisioning and dashboard structure,
and every panel's queries answered by a real Prometheus scraping a live synth server and orchestrator."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer
from prometheus_client import start_http_server

from chorus_orchestrator.main import init, run
from chorus_orchestrator.metrics import OrchestratorMetrics
from chorus_orchestrator.settings import Settings
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings as SynthSettings

from ..orchestrator.fakes import FakeSynth, Mode

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
GRAFANA = REPO / "deploy/grafana"
DATASOURCE = GRAFANA / "provisioning/datasources/prometheus.yml"
PROVIDER = GRAFANA / "provisioning/dashboards/chorus.yml"
DASHBOARD = GRAFANA / "dashboards/chorus-fleet.json"
JOBS = {"chorus-synth": "synth:9100", "chorus-orchestrator": "orchestrator:9200"}
REGION = "us-east-1"

# What the test puts in place of Grafana's built-in variables. Grafana's $__rate_interval would be a few scrape
# intervals; here every window covers the whole run, so that each query sees every sample the run produced.
WINDOW = "2m"
GRAFANA_BUILTINS = {"__rate_interval": WINDOW, "__interval": WINDOW, "__range": WINDOW, "__range_s": "120",
                    "__range_ms": "120000", "__interval_ms": "120000"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} not installed (apt-get install prometheus); CI installs it")
    return path


def _load_yaml(path: Path) -> dict:
    with path.open() as f:
        return yaml.safe_load(f)


def _dashboard() -> dict:
    with DASHBOARD.open() as f:
        return json.load(f)


def _query_panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def _variable_values(dashboard: dict) -> dict[str, str]:
    """Each template variable's value with "All" selected (its allValue, else a match-everything regex)."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def concrete(expr: str, variables: dict[str, str]) -> str:
    """`expr` with Grafana's variables ($x, ${x}, ${x:format}, [[x]]) replaced by concrete values."""
    values = {**GRAFANA_BUILTINS, **variables}

    def value(match: re.Match) -> str:
        name = match.group("a") or match.group("b") or match.group("c")
        assert name in values, f"unknown Grafana variable {name!r} in {expr!r}"
        return values[name]

    # Longest names first in the bare $x form, so that $__range_s is not read as $__range followed by "_s".
    bare = "|".join(sorted(map(re.escape, values), key=len, reverse=True))
    pattern = rf"\$\{{(?P<a>\w+)(?::\w+)?\}}|\[\[(?P<b>\w+)(?::\w+)?\]\]|\$(?P<c>{bare})(?!\w)"
    result = re.sub(pattern, value, expr)
    assert "$" not in result and "[[" not in result, f"a Grafana variable was left in {result!r}"
    return result


# -- the files --------------------------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config_and_its_rules():
    promtool = _tool("promtool")
    # Only a config check: the compose service names (synth, orchestrator) do not resolve here.
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = [PROMETHEUS_CONFIG.parent / name for name in _load_yaml(PROMETHEUS_CONFIG).get("rule_files", [])]
    assert rule_files and all(path.is_file() for path in rule_files)
    result = subprocess.run([promtool, "check", "rules", *map(str, rule_files)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _scrape_targets(job: dict) -> list[str]:
    """A scrape job's targets as host:port, from static configs and DNS names alike."""
    targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
    return targets + [f"{name}:{c['port']}" for c in job.get("dns_sd_configs", []) for name in c["names"]]


def test_prometheus_scrapes_the_compose_services_by_name():
    config = _load_yaml(PROMETHEUS_CONFIG)
    targets = {job["job_name"]: _scrape_targets(job) for job in config["scrape_configs"]}
    assert targets == {name: [target] for name, target in JOBS.items()}
    assert 5 <= int(config["global"]["scrape_interval"].removesuffix("s")) <= 15


def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard_folder():
    datasources = _load_yaml(DATASOURCE)["datasources"]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["uid"]
    # $__rate_interval is four scrape intervals at least only when Grafana knows the scrape interval.
    assert source["jsonData"]["timeInterval"] == _load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    providers = _load_yaml(PROVIDER)["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_dashboard_is_a_grafana_dashboard_on_the_provisioned_data_source():
    uid = _load_yaml(DATASOURCE)["datasources"][0]["uid"]
    dashboard = _dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"] and dashboard.get("id") is None
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        title, grid = panel.get("title"), panel.get("gridPos")
        assert title, panel
        assert set(grid) >= {"h", "w", "x", "y"} and all(isinstance(grid[k], int) for k in "hwxy"), title
        assert grid["w"] >= 1 and grid["h"] >= 1 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, title
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{title!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = title
    panels = _query_panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        title = panel["title"]
        assert panel["type"] in ("timeseries", "stat", "bargauge", "gauge", "table"), title
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, title
        assert panel["targets"], title
        refs = [t["refId"] for t in panel["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, title
            assert target["expr"].strip(), title
            concrete(target["expr"], _variable_values(dashboard))
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


# -- a live Chorus --------------------------------------------------------------------------------------------


def _free_port() -> int:
    """A loopback port nothing listens on (for Prometheus to take, or to stay closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job(document_id: str, index: int, **extra) -> str:
    return json.dumps({"id": document_id, "voice": "v2/en_speaker_0", "script_section": f"Section {index} reads.",
                       "section_index": index, **extra})


class _Prometheus:
    """The real `prometheus` binary on a loopback port, with the shipped config's jobs pointed at local ports."""

    def __init__(self, binary: str, workdir: Path, targets: dict[str, str]) -> None:
        config = _load_yaml(PROMETHEUS_CONFIG)
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])]
        for job in config["scrape_configs"]:
            for key in [k for k in job if k.endswith("_sd_configs")]:
                del job[key]
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT)

    def _get(self, path: str, **params) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            reply = json.load(response)
        assert reply["status"] == "success", reply
        return reply["data"]

    async def get(self, path: str, **params) -> dict:
        return await asyncio.to_thread(self._get, path, **params)

    async def query(self, expr: str) -> list[dict]:
        return (await self.get("/api/v1/query", query=expr))["result"]

    async def wait_until_up(self, jobs: set[str], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                assert self.process.poll() is None, self.log.read_text()
                with contextlib.suppress(OSError):
                    active = (await self.get("/api/v1/targets"))["activeTargets"]
                    if {t["labels"]["job"] for t in active if t["health"] == "up"} >= jobs:
                        return
                await asyncio.sleep(0.2)

    async def wait_for(self, expr: str, timeout_s: float = 30.0) -> list[dict]:
        """The first non-empty answer to `expr`."""
        async with asyncio.timeout(timeout_s):
            while not (result := await self.query(expr)):
                await asyncio.sleep(0.2)
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _wait_until(condition, timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.timeout(420)
async def test_every_panel_query_returns_series_from_a_live_chorus(tmp_path, monkeypatch):
    prometheus_binary = _tool("prometheus")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    dashboard = _dashboard()
    async with contextlib.AsyncExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"

        # Clips capped at 0.3 s: random weights never stop talking.
        synth = SynthServer(SynthSettings(
            model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1",
            max_clip_seconds=0.3, max_batch=4, workers="thread"))
        await synth.start()
        stack.push_async_callback(synth.stop, grace_s=0)
        # A second endpoint that answers UNAVAILABLE (with more capacity, so it is tried first): retries, then it is
        # set aside; a third one nothing listens on: down from the start. The same closed port takes an upload.
        flaky = await FakeSynth(mode=Mode.UNAVAILABLE, capacity=8, gpu_model="Flaky GPU").start()
        stack.push_async_callback(flaky.stop)
        closed_port = _free_port()

        settings = Settings(
            command="init", queue_url=f"{moto_url}/123456789012/jobs", dlq_url=f"{moto_url}/123456789012/jobs-dlq",
            bucket="clips", table="results", region=REGION, endpoint_url=moto_url,
            synth=(f"127.0.0.1:{synth.port}", flaky.address, f"127.0.0.1:{closed_port}"),
            metrics_port=0, visibility_timeout_s=30, call_timeout_s=90, release_backoff_s=1,
            max_release_backoff_s=2, drain_grace_s=5, upload_hosts=("127.0.0.1",))
        await init(settings)
        sqs = await stack.enter_async_context(get_session().create_client(
            "sqs", region_name=REGION, endpoint_url=moto_url))
        settings = dataclasses.replace(settings, command="run",
                                       queue_url=(await sqs.get_queue_url(QueueName="jobs"))["QueueUrl"])

        async with asyncio.timeout(60):
            while synth.state is State.STARTING:
                await asyncio.sleep(0.05)
        assert synth.state is State.READY, synth.state_message

        metrics = OrchestratorMetrics()
        metrics_http, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
        stack.callback(metrics_http.server_close)
        stack.callback(metrics_http.shutdown)
        stop = asyncio.Event()
        daemon = asyncio.create_task(run(settings, metrics=metrics, stop=stop))

        async def stop_daemon() -> None:
            stop.set()
            await asyncio.wait_for(daemon, 30)

        stack.push_async_callback(stop_daemon)

        prometheus = _Prometheus(prometheus_binary, tmp_path, {
            "chorus-synth": f"127.0.0.1:{synth.metrics_port}",
            "chorus-orchestrator": f"127.0.0.1:{metrics_http.server_port}",
        })
        stack.callback(prometheus.stop)
        await prometheus.wait_until_up(set(JOBS))

        # Jobs in waves while Prometheus scrapes every second, so that counters rise between scrapes: two good
        # jobs and a poison message each, and once a voice the synth server refuses and an upload that fails.
        clips = metrics.clips.labels(gpu_model="cpu")._value
        waves = 3
        for wave in range(waves):
            bodies = [_job("doc", 2 * wave), _job("doc", 2 * wave + 1), "not json"]
            if wave == 0:
                bodies += [_job("refused", 0, voice="v2/xx_speaker_9"),
                           _job("unstored", 0, upload_url=f"http://127.0.0.1:{closed_port}/clip.mp3")]
            reply = await sqs.send_message_batch(QueueUrl=settings.queue_url, Entries=[
                {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)])
            assert not reply.get("Failed"), reply
            # Generous: on 2 shared cores, other work can slow the synth server several times over.
            await _wait_until(lambda: clips.get() >= 2 * (wave + 1), 90, f"wave {wave}'s clips")
            await asyncio.sleep(1.5)
        await _wait_until(lambda: metrics.failed.labels(reason="upload")._value.get() >= 1, 90, "a failed upload")
        # Prometheus has every clip (and the upload failure) once it scraped them.
        await prometheus.wait_for(f"sum(chorus_orchestrator_clips_total) >= {2 * waves}")
        await prometheus.wait_for('chorus_orchestrator_jobs_failed_total{reason="upload"}')
        assert metrics.retries._value.get() >= 1 and synth.state is State.READY

        empty, values = [], {}
        variables = _variable_values(dashboard)
        for panel in _query_panels(dashboard):
            for target in panel["targets"]:
                expr = concrete(target["expr"], variables)
                result = await prometheus.query(expr)
                values[(panel["title"], target["refId"])] = [float(s["value"][1]) for s in result]
                if not result:
                    empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
        assert not empty, "queries with no series:\n" + "\n".join(empty)
        # The speed panels show numbers, not just series: real-time factor and words per second of the CPU.
        for key in (("Real-time factor per GPU model", "A"), ("Real-time factor per GPU model", "B"),
                    ("Words per second per GPU model", "A"), ("Clips per second", "A")):
            assert any(math.isfinite(v) and v > 0 for v in values[key]), (key, values[key])

        # The variable's label_values() query, as Grafana's Prometheus data source asks it.
        for variable in dashboard["templating"]["list"]:
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            names = await prometheus.get(f"/api/v1/label/{match.group(2)}/values", **{"match[]": match.group(1)})
            assert "cpu" in names, (variable["name"], names)

        # The shipped recording rules, evaluated every second by the same Prometheus.
        groups = (await prometheus.get("/api/v1/rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert rules and all(rule["health"] == "ok" for rule in rules), rules
        started = time.monotonic()
        for rule in rules:
            series = await prometheus.wait_for(rule["name"], timeout_s=max(1.0, 15 - (time.monotonic() - started)))
            assert any(math.isfinite(float(s["value"][1])) for s in series), (rule["name"], series)
