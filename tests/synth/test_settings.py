from __future__ import annotations

import pytest
import torch

from chorus_synth.devices import DeviceError, describe, parse_devices
from chorus_synth.settings import DEFAULT_MODEL, parse_settings


def test_defaults():
    settings = parse_settings([], env={})
    assert settings.model == DEFAULT_MODEL == "suno/bark-small"
    assert (settings.host, settings.port, settings.metrics_port) == ("[::]", 50051, 9100)


def test_environment_sets_defaults_and_flags_win():
    env = {"CHORUS_MODEL": "random:tiny", "CHORUS_PORT": "6000", "CHORUS_WARMUP": "false",
           "CHORUS_MAX_CLIP_SECONDS": "2.5"}
    settings = parse_settings(["--port", "7000"], env=env)
    assert (settings.model, settings.port, settings.warmup, settings.max_clip_seconds) == (
        "random:tiny", 7000, False, 2.5)


@pytest.mark.parametrize("argv, env, fragment", [
    (["--max-batch", "0"], {}, "--max-batch must be at least 1"),
    (["--max-clip-seconds", "60"], {}, "--max-clip-seconds"),
    (["--port", "70000"], {}, "--port"),
    ([], {"CHORUS_PORT": "http"}, "CHORUS_PORT='http' is not a valid int"),
])
def test_bad_settings_are_refused_with_the_reason(argv, env, fragment, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, env=env)
    assert exited.value.code == 2
    assert fragment in capsys.readouterr().err


def test_devices():
    assert parse_devices("cpu") == [torch.device("cpu")]
    assert parse_devices("cpu,cpu") == [torch.device("cpu")] * 2
    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len(parse_devices("auto")) == max(expected, 1)
    info = describe(torch.device("cpu"))
    assert info.gpu_model == "cpu" and info.memory_bytes > 0


@pytest.mark.parametrize("spec", ["cuda:7", "tpu", "banana"])
def test_unusable_devices_are_refused(spec):
    with pytest.raises(DeviceError, match="--devices"):
        parse_devices(spec)
