"""`chorus report`: how fast each GPU model reads, from the results table; with prices, what it costs.

Per GPU model: the number of clips, and the spread (min, 25th percentile, median, 75th percentile, max) of the
real-time factor (audio_seconds / inference_seconds: above 1 is faster than real time) and of words per second
(words / inference_seconds). Percentiles are numpy's default "linear" method (Hyndman & Fan type 7, the same as
R's default and Excel's PERCENTILE.INC): the p-th percentile of n sorted values sits at position p/100 * (n - 1),
interpolated between its two neighbours.

A clip's inference_seconds is the time of the batch it was generated in, so with batching the per-clip rates
understate what the GPU does in total; they compare GPU models run the same way. Clips without a positive
inference_seconds are counted but left out of the rates.

Prices: a small file mapping GPU model (as recorded, e.g. "NVIDIA GeForce RTX 4090") to US dollars per hour of
that GPU, either a JSON object (keys starting with "_" are comments) or CSV lines `gpu_model,usd_per_hour` (an
optional header line, "#" comments). Words per dollar = median words per second * 3600 / dollars per hour.

Exit status: 0 report printed (also for an empty table); 2 the table or the price file cannot be read.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from chorus_clients.aws import add_aws_arguments, aws_client
from chorus_clients.records import TableError, scan

_FIELDS = ("gpu_model", "audio_seconds", "inference_seconds", "words")
UNKNOWN_GPU = "unknown"
PERCENTILES = (0, 25, 50, 75, 100)


@dataclass(frozen=True)
class Spread:
    """Min, quartiles and max of a set of values (numpy's linear percentiles)."""

    min: float
    p25: float
    median: float
    p75: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Spread | None:
        if values.size == 0:
            return None
        return cls(*(float(value) for value in np.percentile(values, PERCENTILES)))


@dataclass(frozen=True, eq=False)
class GpuStats:
    gpu_model: str
    clips: int
    # Per timed clip (inference_seconds > 0), in the order scanned; kept for the box plot.
    rtf: np.ndarray = field(repr=False)
    words_per_second: np.ndarray = field(repr=False)
    audio_seconds: float  # every clip's, summed
    words: int

    @property
    def timed_clips(self) -> int:
        return int(self.rtf.size)

    @property
    def rtf_spread(self) -> Spread | None:
        return Spread.of(self.rtf)

    @property
    def words_per_second_spread(self) -> Spread | None:
        return Spread.of(self.words_per_second)


@dataclass(frozen=True)
class Report:
    table: str
    gpu_models: tuple[GpuStats, ...]  # sorted by model name

    @property
    def clips(self) -> int:
        return sum(stats.clips for stats in self.gpu_models)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


async def build_report(dynamodb, table: str) -> Report:
    """Scan every record of ``table`` (paginated, four attributes each); raises `TableError`."""
    clips: dict[str, int] = {}
    rtf: dict[str, array.array] = {}
    words_per_second: dict[str, array.array] = {}
    audio_seconds: dict[str, float] = {}
    words: dict[str, int] = {}
    async for item in scan(dynamodb, table, _FIELDS):
        model = str(item.get("gpu_model") or UNKNOWN_GPU)
        clips[model] = clips.get(model, 0) + 1
        audio = _number(item.get("audio_seconds"))
        inference = _number(item.get("inference_seconds"))
        count = _number(item.get("words"))
        audio_seconds[model] = audio_seconds.get(model, 0.0) + (audio or 0.0)
        words[model] = words.get(model, 0) + int(count or 0)
        rtf.setdefault(model, array.array("d"))
        words_per_second.setdefault(model, array.array("d"))
        if inference is not None and inference > 0 and audio is not None and count is not None:
            rtf[model].append(audio / inference)
            words_per_second[model].append(count / inference)
    return Report(table, tuple(
        GpuStats(model, clips[model], np.frombuffer(rtf[model], dtype=np.float64),
                 np.frombuffer(words_per_second[model], dtype=np.float64), audio_seconds[model], words[model])
        for model in sorted(clips)))


def load_prices(path: Path | str) -> dict[str, float]:
    """GPU model -> US dollars per hour from a JSON or CSV file (see the module's doc); ValueError if malformed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    prices: dict[str, float] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of GPU model -> dollars per hour")
        for model, price in data.items():
            if model.startswith("_"):
                continue
            prices[model] = _price(price, f"{path}: {model!r}")
        return prices
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{number}: expected gpu_model,usd_per_hour, got {row}")
        model, price = row[0].strip(), row[1].strip()
        if number == 1 and model.lower() == "gpu_model":
            continue
        try:
            value = float(price)
        except ValueError:
            raise ValueError(f"{path}:{number}: price {price!r} is not a number") from None
        prices[model] = _price(value, f"{path}:{number}")
    return prices


def _price(value: object, where: str) -> float:
    price = _number(value)
    if price is None or price <= 0:
        raise ValueError(f"{where}: price must be a positive number of dollars per hour, got {value!r}")
    return price


def _price_of(model: str, prices: Mapping[str, object]) -> float | None:
    price = prices.get(model)
    if price is None:
        folded = {str(name).casefold(): value for name, value in prices.items()}
        price = folded.get(model.casefold())
    price = _number(price)
    return price if price is not None and price > 0 else None


def words_per_dollar(stats: GpuStats, usd_per_hour: float) -> float | None:
    spread = stats.words_per_second_spread
    return None if spread is None else spread.median * 3600 / usd_per_hour


def format_report(report: Report, prices: Mapping[str, object] | None = None) -> str:
    """Plain aligned text, one row per GPU model; with ``prices``, dollars per hour and words per dollar."""
    if not report.gpu_models:
        return f"no clips recorded in {report.table}"
    header = ["gpu model", "clips",
              "rtf min", "rtf p25", "rtf median", "rtf p75", "rtf max",
              "words/s min", "words/s p25", "words/s median", "words/s p75", "words/s max"]
    if prices is not None:
        header += ["$/hour", "words/$"]
    rows = [header]
    for stats in report.gpu_models:
        row = [stats.gpu_model, str(stats.clips)]
        for spread in (stats.rtf_spread, stats.words_per_second_spread):
            row += ["-"] * 5 if spread is None else [
                f"{value:.2f}" for value in (spread.min, spread.p25, spread.median, spread.p75, spread.max)]
        if prices is not None:
            price = _price_of(stats.gpu_model, prices)
            per_dollar = None if price is None else words_per_dollar(stats, price)
            row += ["-" if price is None else f"{price:.2f}",
                    "-" if per_dollar is None else f"{per_dollar:,.0f}"]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    untimed = sum(stats.clips - stats.timed_clips for stats in report.gpu_models)
    lines.append(f"{report.clips} clips in {report.table}; rtf = audio seconds / inference seconds"
                 + (f"; {untimed} clips without inference time left out of the rates" if untimed else ""))
    if prices is not None:
        lines.append("words/$ = median words/s * 3600 / $ per hour")
    return "\n".join(lines)


def plot_report(report: Report, path: Path | str) -> None:
    """A PNG with two box plots per GPU model: real-time factor and words per second. Written atomically."""
    path = Path(path)
    timed = [stats for stats in report.gpu_models if stats.timed_clips]
    figure = Figure(figsize=(max(8.0, 2.0 + 1.6 * len(timed)), 5.5), layout="constrained")
    rtf_axes, words_axes = figure.subplots(1, 2)
    if timed:
        positions = list(range(1, len(timed) + 1))
        labels = [f"{stats.gpu_model}\n(n={stats.timed_clips})" for stats in timed]
        # Whiskers from min to max, as in the table (matplotlib's default stops them at 1.5 IQR).
        rtf_axes.boxplot([stats.rtf for stats in timed], positions=positions, whis=(0, 100))
        words_axes.boxplot([stats.words_per_second for stats in timed], positions=positions, whis=(0, 100))
        rtf_axes.axhline(1.0, color="tab:red", linestyle="--", linewidth=1, label="real time")
        rtf_axes.legend(loc="best", fontsize="small")
        for axes in (rtf_axes, words_axes):
            axes.set_xticks(positions, labels=labels, rotation=20, ha="right", fontsize="small")
    else:
        rtf_axes.text(0.5, 0.5, "no timed clips", ha="center", va="center", transform=rtf_axes.transAxes)
    rtf_axes.set_title("real-time factor (audio s / inference s)")
    words_axes.set_title("words per second of inference")
    for axes in (rtf_axes, words_axes):
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{report.table}: {report.clips} clips (boxes: quartiles and median; whiskers: min to max)")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as file:
            figure.savefig(file, format="png", dpi=110)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="speed (and cost) per GPU model from the results table",
        description="Scan the results table and print, per GPU model, the clip count and the spread of the "
        "real-time factor and of words per second; with --prices also dollars per hour and words per dollar.",
        epilog="Exit status: 0 report printed; 2 the table or the price file cannot be read.")
    parser.add_argument("--table", required=True, help="results table")
    parser.add_argument("--prices", type=Path, help="GPU model -> dollars per hour: a JSON object or CSV "
                        "gpu_model,usd_per_hour (see clients/prices.example.json)")
    parser.add_argument("--plot", type=Path, help="write a PNG box plot here")
    add_aws_arguments(parser)
    parser.set_defaults(handler=report)


async def report(args: argparse.Namespace) -> int:
    prices = None
    if args.prices is not None:
        try:
            prices = load_prices(args.prices)
        except (OSError, ValueError) as exc:
            print(f"chorus report: cannot read prices: {exc}", file=sys.stderr)
            return 2
    try:
        async with aws_client(args, "dynamodb") as dynamodb:
            result = await build_report(dynamodb, args.table)
    except TableError as exc:
        print(f"chorus report: {exc}", file=sys.stderr)
        return 2
    print(format_report(result, prices))
    if args.plot is not None:
        try:
            await asyncio.to_thread(plot_report, result, args.plot)
        except OSError as exc:
            print(f"chorus report: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 2
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
