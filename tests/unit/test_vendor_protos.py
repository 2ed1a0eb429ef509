"""proto/vendor/ holds googleapis' google/api protos as published; the Python modules of those
files come from googleapis-common-protos, so the copy must be that release's, byte for byte."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[2] / "proto" / "vendor"


@pytest.mark.parametrize("name", ["google/api/annotations.proto", "google/api/http.proto"])
def test_the_vendored_google_api_protos_are_the_installed_releases(name: str) -> None:
    installed = resources.files("google.api").joinpath(Path(name).name).read_bytes()
    assert (VENDOR / name).read_bytes() == installed, f"proto/vendor/{name}: copy it again"
