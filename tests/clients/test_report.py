from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from chorus_clients import cli
from chorus_clients.records import scan
from chorus_clients.report import Spread, build_report, format_report, load_prices, plot_report, words_per_dollar
from chorus_orchestrator.results import ClipRecord, ResultTable, ensure_table

REGION = "us-east-1"  # the moto clients' region (conftest.py)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLE_PRICES = Path(__file__).parents[2] / "clients" / "prices.example.json"

RTX_4090 = "NVIDIA GeForce RTX 4090"
RTX_3090 = "NVIDIA GeForce RTX 3090"
# (gpu_model, audio_seconds, inference_seconds, words). By hand:
#   4090: rtf 1, 2, 4, 8 and words/s 5, 10, 15, 25 (inference 2 s). Linear percentiles of 4 values sit at
#         positions 0, 0.75, 1.5, 2.25, 3: rtf 1, 1.75, 3, 5, 8; words/s 5, 8.75, 12.5, 17.5, 25.
#   3090: rtf 1, 2, 3 and words/s 2, 4, 6 (inference 0.5 s), at positions 0, 0.5, 1, 1.5, 2:
#         rtf 1, 1.5, 2, 2.5, 3; words/s 2, 3, 4, 5, 6. Plus one clip with no inference time: counted, not timed.
CLIPS = [
    (RTX_4090, 2.0, 2.0, 10), (RTX_4090, 4.0, 2.0, 20), (RTX_4090, 8.0, 2.0, 30), (RTX_4090, 16.0, 2.0, 50),
    (RTX_3090, 0.5, 0.5, 1), (RTX_3090, 1.0, 0.5, 2), (RTX_3090, 1.5, 0.5, 3), (RTX_3090, 1.0, 0.0, 2),
]
PRICES = {RTX_4090: 0.25, RTX_3090: 0.5}
# words/$ = median words/s * 3600 / $ per hour: 4090 12.5 * 3600 / 0.25, 3090 4 * 3600 / 0.5.
WORDS_PER_DOLLAR = {RTX_4090: 180_000.0, RTX_3090: 28_800.0}


@pytest.fixture
async def table(dynamodb, unique) -> str:
    name = f"results-{unique}"
    await ensure_table(dynamodb, name, wait_delay_s=0.1)
    results = ResultTable(dynamodb, name)
    for number, (gpu_model, audio_seconds, inference_seconds, words) in enumerate(CLIPS):
        await results.record(ClipRecord(
            document_id=f"doc-{number % 3}", section_index=number, text=" ".join(["word"] * words),
            voice="v2/en_speaker_6", location=f"s3://clips/doc/{number:05d}.mp3", audio_seconds=audio_seconds,
            words=words, inference_seconds=inference_seconds, queue_seconds=0.5, gpu_model=gpu_model,
            device="cuda:0", endpoint="10.0.0.7:50051", attempt=1, receive_count=1,
            recorded_at="2026-01-01T00:00:00+00:00", section_count=8, sample_rate_hz=24000, encoding="mp3"))
    return name


async def test_spread_per_gpu_model_is_the_hand_computed_one(dynamodb, table):
    report = await build_report(dynamodb, table)

    assert report.clips == 8
    by_model = {stats.gpu_model: stats for stats in report.gpu_models}
    assert list(by_model) == [RTX_3090, RTX_4090]
    rtx4090, rtx3090 = by_model[RTX_4090], by_model[RTX_3090]
    assert (rtx4090.clips, rtx4090.timed_clips) == (4, 4)
    assert rtx4090.rtf_spread == Spread(1.0, 1.75, 3.0, 5.0, 8.0)
    assert rtx4090.words_per_second_spread == Spread(5.0, 8.75, 12.5, 17.5, 25.0)
    assert (rtx3090.clips, rtx3090.timed_clips) == (4, 3)
    assert rtx3090.rtf_spread == Spread(1.0, 1.5, 2.0, 2.5, 3.0)
    assert rtx3090.words_per_second_spread == Spread(2.0, 3.0, 4.0, 5.0, 6.0)
    assert (rtx3090.audio_seconds, rtx3090.words) == (4.0, 8)
    for model, price in PRICES.items():
        assert words_per_dollar(by_model[model], price) == pytest.approx(WORDS_PER_DOLLAR[model], rel=1e-12)


async def test_table_text_with_and_without_prices(dynamodb, table):
    report = await build_report(dynamodb, table)

    plain = format_report(report)
    priced = format_report(report, PRICES)

    assert "$/hour" not in plain and "words/$" not in plain
    header, rule, row3090, row4090, *notes = priced.splitlines()
    assert header.split()[:2] == ["gpu", "model"] and header.endswith("words/$")
    assert set(rule.replace(" ", "")) == {"-"}
    assert row3090.split() == ["NVIDIA", "GeForce", "RTX", "3090", "4", "1.00", "1.50", "2.00", "2.50", "3.00",
                               "2.00", "3.00", "4.00", "5.00", "6.00", "0.50", "28,800"]
    assert row4090.split() == ["NVIDIA", "GeForce", "RTX", "4090", "4", "1.00", "1.75", "3.00", "5.00", "8.00",
                               "5.00", "8.75", "12.50", "17.50", "25.00", "0.25", "180,000"]
    # Columns line up: every row's words/$ column ends where the header's does.
    assert len(row3090) == len(row4090) == len(header)
    assert any("1 clips without inference time" in note for note in notes)


async def test_models_without_a_price_get_a_dash(dynamodb, table):
    # Case-insensitive match, "_" comments and strings ignored (a raw JSON object may be passed).
    text = format_report(await build_report(dynamodb, table), {RTX_4090.lower(): 0.25, "_comment": "example"})

    rows = {line.split()[3]: line.split() for line in text.splitlines()[2:4]}
    assert rows["4090"][-2:] == ["0.25", "180,000"]
    assert rows["3090"][-2:] == ["-", "-"]


async def test_scan_follows_every_page(dynamodb, table):
    items = [item async for item in scan(dynamodb, table, ["gpu_model", "words"], page_size=3)]

    assert len(items) == len(CLIPS)
    assert sorted(item["words"] for item in items) == sorted(words for *_, words in CLIPS)
    assert all(set(item) == {"gpu_model", "words"} for item in items)


async def test_empty_table(dynamodb, unique):
    name = f"empty-{unique}"
    await ensure_table(dynamodb, name, wait_delay_s=0.1)

    report = await build_report(dynamodb, name)

    assert report.gpu_models == () and report.clips == 0
    assert format_report(report, PRICES) == f"no clips recorded in {name}"


async def test_plot_is_a_png(dynamodb, table, tmp_path):
    path = tmp_path / "plots" / "report.png"

    plot_report(await build_report(dynamodb, table), path)

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.png"]


def test_prices_from_json_and_csv(tmp_path):
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"_comment": "example values", RTX_4090: 0.4, RTX_3090: 0.22}))
    as_csv = tmp_path / "prices.csv"
    as_csv.write_text(f"gpu_model,usd_per_hour\n# example values\n{RTX_4090},0.4\n\n{RTX_3090}, 0.22\n")

    assert load_prices(as_json) == load_prices(as_csv) == {RTX_4090: 0.4, RTX_3090: 0.22}
    example = load_prices(EXAMPLE_PRICES)
    assert {RTX_4090, RTX_3090, "NVIDIA GeForce RTX 3060"} <= set(example)
    assert all(price > 0 for price in example.values())


@pytest.mark.parametrize("name, text", [
    ("bad.json", '{"NVIDIA GeForce RTX 4090": "cheap"}'),
    ("bad.json", '{"NVIDIA GeForce RTX 4090": -1}'),
    ("bad.json", "[1, 2]"),
    ("bad.csv", "NVIDIA GeForce RTX 4090,cheap\n"),
    ("bad.csv", "NVIDIA GeForce RTX 4090\n"),
])
def test_malformed_prices_are_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError):
        load_prices(path)


async def test_cli_prints_the_table_and_writes_the_plot(table, tmp_path, moto_endpoint, capsys):
    plot = tmp_path / "report.png"

    # cli.main runs its own event loop (asyncio.run), so it runs in a thread of its own here.
    status = await asyncio.to_thread(cli.main, [
        "report", "--table", table, "--prices", str(EXAMPLE_PRICES), "--plot", str(plot),
        "--endpoint-url", moto_endpoint, "--region", REGION])

    captured = capsys.readouterr()
    assert status == 0
    lines = captured.out.splitlines()
    assert lines[0].startswith("gpu model") and "words/$" in lines[0]
    row4090 = next(line.split() for line in lines if RTX_4090 in line)
    # The example file's 4090 price, and words/$ from it: 12.5 * 3600 / price.
    price = load_prices(EXAMPLE_PRICES)[RTX_4090]
    assert row4090[-2:] == [f"{price:.2f}", f"{12.5 * 3600 / price:,.0f}"]
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert str(plot) in captured.err


async def test_cli_exits_2_for_a_missing_table_or_bad_prices(tmp_path, moto_endpoint, capsys):
    aws = ["--endpoint-url", moto_endpoint, "--region", REGION]

    status = await asyncio.to_thread(cli.main, ["report", "--table", "no-such-table", *aws])

    assert status == 2
    assert "ResourceNotFoundException" in capsys.readouterr().err

    bad = tmp_path / "prices.csv"
    bad.write_text("NVIDIA GeForce RTX 4090,free\n")
    status = await asyncio.to_thread(cli.main, ["report", "--table", "no-such-table", "--prices", str(bad), *aws])

    assert status == 2
    assert "cannot read prices" in capsys.readouterr().err
