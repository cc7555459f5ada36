"""Container health check for the Chorus images: exit 0 when every named check passes, 1 otherwise.

    healthcheck.py grpc          # the synth server's gRPC health for chorus.synth.v1.Synth is SERVING
    healthcheck.py http          # the orchestrator's /metrics answers 200
    healthcheck.py grpc http     # both (the SaladCloud image runs the two in one container)

Ports follow the services' own settings: gRPC on CHORUS_PORT (50051), HTTP on CHORUS_METRICS_PORT (9200); in the
SaladCloud image, where deploy/salad/entrypoint.sh sets them per process, SYNTH_PORT and ORCHESTRATOR_METRICS_PORT
come first. --grpc-target and --http-url override all of them. Only the standard library and grpcio (a base
dependency of the project) are used, so the check runs in every image without another download.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

SYNTH_SERVICE = "chorus.synth.v1.Synth"


def grpc_serving(target: str, service: str, timeout_s: float) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A proxy from the environment must not catch a loopback health check.
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"gRPC health of {service!r} at {target}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"gRPC health of {service!r} at {target}: {status}"


def http_ok(url: str, timeout_s: float) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as reply:
            return reply.status == 200, f"GET {url}: {reply.status}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"GET {url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checks", nargs="+", choices=("grpc", "http"))
    env = os.environ
    grpc_port = env.get("SYNTH_PORT") or env.get("CHORUS_PORT") or "50051"
    http_port = env.get("ORCHESTRATOR_METRICS_PORT") or env.get("CHORUS_METRICS_PORT") or "9200"
    parser.add_argument("--grpc-target", default=f"localhost:{grpc_port}")
    parser.add_argument("--grpc-service", default=SYNTH_SERVICE)
    parser.add_argument("--http-url", default=f"http://localhost:{http_port}/metrics")
    parser.add_argument("--timeout-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    healthy = True
    for check in args.checks:
        if check == "grpc":
            ok, line = grpc_serving(args.grpc_target, args.grpc_service, args.timeout_s)
        else:
            ok, line = http_ok(args.http_url, args.timeout_s)
        print(line)
        healthy = healthy and ok
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
