"""The clients' tests use the moto server and AWS clients of tests/conftest.py, and the data files here."""

from __future__ import annotations

from pathlib import Path

from ..conftest import REGION  # noqa: F401 - the tests import it from here

DATA = Path(__file__).parent / "data"
