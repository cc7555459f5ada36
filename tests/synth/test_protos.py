"""The committed stubs are exactly what `make protos` generates from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "chorus/synth/v1/synth.proto"
GENERATED = ["synth_pb2.py", "synth_pb2.pyi", "synth_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos"), f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "protos" / PROTO)],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "chorus/synth/v1" / name).read_text()
        committed = (ROOT / "protos/chorus/synth/v1" / name).read_text()
        assert committed == fresh, f"protos/chorus/synth/v1/{name} is stale: run `make protos`"
