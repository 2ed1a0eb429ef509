"""Settings fail fast and name the bad key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from meshkit import ServerSettings, SettingsError, load_settings


@dataclasses.dataclass(frozen=True)
class Demo(ServerSettings):
    db_path: Path = Path("x.db")
    token: str = dataclasses.field(default="", metadata={"help": "a token"})


@dataclasses.dataclass(frozen=True)
class Required:
    url: str


def test_defaults_when_nothing_is_set() -> None:
    settings = load_settings(Demo, "DEMO", {})
    assert settings.host == "127.0.0.1"
    assert settings.port == 0
    assert settings.db_path == Path("x.db")


def test_values_are_converted_by_type() -> None:
    env = {
        "DEMO_PORT": "5000",
        "DEMO_GRACE_SECONDS": "1.5",
        "DEMO_DB_PATH": "/tmp/a.db",
        "DEMO_LOG_LEVEL": "DEBUG",
    }
    settings = load_settings(Demo, "DEMO", env)
    assert (settings.port, settings.grace_seconds) == (5000, 1.5)
    assert settings.db_path == Path("/tmp/a.db")
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEMO_PORT": "http"}, "DEMO_PORT"),
        ({"DEMO_PORT": "70000"}, "DEMO_PORT"),
        ({"DEMO_MAX_WORKERS": "0"}, "DEMO_MAX_WORKERS"),
        ({"DEMO_LOG_LEVEL": "LOUD"}, "DEMO_LOG_LEVEL"),
        ({"DEMO_GRACE_SECONDS": "soon"}, "DEMO_GRACE_SECONDS"),
        ({"DEMO_PROT": "5000"}, "DEMO_PROT"),
    ],
    ids=["not-an-int", "port-out-of-range", "below-min", "not-a-choice", "not-a-number", "typo"],
)
def test_bad_values_name_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(Demo, "DEMO", env)


def test_missing_required_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="REQ_URL is required"):
        load_settings(Required, "REQ", {})


def test_other_prefixes_are_ignored() -> None:
    assert load_settings(Demo, "DEMO", {"DEMOX_PORT": "1", "OTHER_PORT": "2"}).port == 0
