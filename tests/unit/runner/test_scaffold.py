"""`mesh new service`: what it refuses (writing nothing) and what it writes, on a scratch copy of
the checkout's configuration."""

from __future__ import annotations

import hashlib
import py_compile
import shutil
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

from mesh_runner.cli import main

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files `mesh new` reads and edits, copied; proto/ and services/ as they are."""
    for name in ("mesh.toml", "pyproject.toml", "docker-compose.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("proto", "services", "gen"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


# zz_probe: a name no checkout has (one may well have made `loyalty` following the tutorial).
@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["inventory"], "exists already"),
        (["9lives"], "not a valid service name"),
        (["Loyalty"], "not a valid service name"),
        (["class"], "not a valid service name"),
        (["gift-cards"], "not a valid service name"),
        (["zz_probe", "--port", "50051"], "port 50051 is 'orders''s"),
        (["zz_probe", "--package", "Shop.Probe"], "versioned proto package"),
        (["zz_probe", "--resource", "member"], "UpperCamelCase"),
    ],
)
def test_refusals_touch_nothing(
    checkout: Path, args: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(checkout)
    assert main(["--root", str(checkout), "new", "service", *args]) == 2
    assert why in capsys.readouterr().err
    assert digest(checkout) == before


def test_a_port_in_use_by_a_process_is_refused(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        before = digest(checkout)
        assert (
            main(["--root", str(checkout), "new", "service", "zz_probe", "--port", str(port)]) == 2
        )
    assert "in use by a running process" in capsys.readouterr().err
    assert digest(checkout) == before


def test_a_new_service_gets_every_file_and_entry(checkout: Path) -> None:
    assert (
        main(["--root", str(checkout), "new", "service", "gift_cards", "--resource", "Card"]) == 0
    )
    src = checkout / "services/gift_cards/src/gift_cards"
    for relative in (
        "proto/shop/gift_cards/v1/gift_cards.proto",
        "proto/shop/gift_cards/v1/avro/card_created.avsc",
        "proto/shop/gift_cards/v1/avro/topic.json",
        "tests/unit/gift_cards/test_gift_cards.py",
        "tests/e2e/test_gift_cards_service.py",
    ):
        assert (checkout / relative).is_file(), relative
    for layer in ("domain", "app", "adapters", "entrypoints"):
        assert (src / layer / "__init__.py").is_file()
    for path in [*src.rglob("*.py"), *(checkout / "tests").rglob("*.py")]:
        assert "$" not in path.read_text(), f"unfilled placeholder in {path}"
        py_compile.compile(str(path), doraise=True)

    components = tomllib.loads((checkout / "mesh.toml").read_text())["component"]
    ours = next(c for c in components if c["name"] == "gift_cards")
    ports = [c["port"] for c in components if c["name"] != "gift_cards"]
    assert ours["port"] == max(p for p in ports if p >= 50051) + 1
    assert ours["command"] == ["python", "-m", "gift_cards"]

    project = tomllib.loads((checkout / "pyproject.toml").read_text())
    assert "gift_cards" in project["project"]["dependencies"]
    assert project["tool"]["uv"]["sources"]["gift_cards"] == {"workspace": True}
    assert "services/gift_cards/src" in project["tool"]["mypy"]["files"]

    compose = yaml.safe_load((checkout / "docker-compose.yml").read_text())
    block = compose["services"]["gift_cards"]
    assert block["command"] == ["python", "-m", "gift_cards"]
    assert block["environment"]["GIFT_CARDS_PORT"] == str(ours["port"])
    assert "gift-cards-data" in compose["volumes"]
