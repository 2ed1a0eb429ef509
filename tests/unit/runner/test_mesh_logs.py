"""`mesh logs [SERVICE] --tail N|all`: the last lines of each log (200 by default, saying so
when it leaves some out), reaching back into the rotated files (NAME.log.1, ...) as needed."""

from __future__ import annotations

from pathlib import Path

from support.mesh import mesh_cli, write_moved_mesh_toml


def _logs(root: Path) -> None:
    write_moved_mesh_toml(root, ["trace-receiver", "schema-registry"])
    logs = root / ".mesh" / "logs"
    logs.mkdir(parents=True)
    (logs / "schema-registry.log.2").write_text("".join(f"a{i}\n" for i in range(150)))
    (logs / "schema-registry.log.1").write_text("".join(f"b{i}\n" for i in range(150)))
    (logs / "schema-registry.log").write_text("c0\nc1\n")
    (logs / "trace-receiver.log").write_text("r0\n")


def test_tail_reaches_into_the_rotated_files(tmp_path: Path) -> None:
    _logs(tmp_path)
    three = mesh_cli(tmp_path, "logs", "schema-registry", "--tail", "3")
    assert three.returncode == 0, three.stderr
    assert three.stdout.splitlines() == ["b149", "c0", "c1"]
    assert "--tail all" in three.stderr

    every = mesh_cli(tmp_path, "logs", "schema-registry", "--tail", "all")
    assert every.stdout.splitlines() == [
        *(f"a{i}" for i in range(150)),
        *(f"b{i}" for i in range(150)),
        "c0",
        "c1",
    ]
    assert every.stderr == ""


def test_the_default_is_the_last_200_lines_of_each_log(tmp_path: Path) -> None:
    _logs(tmp_path)
    result = mesh_cli(tmp_path, "logs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    registry = [x for x in lines if x.startswith("schema-registry | ")]
    assert len(registry) == 200
    assert registry[0] == "schema-registry | a102"
    assert registry[-1] == "schema-registry | c1"
    assert [x for x in lines if x.startswith("trace-receiver")] == ["trace-receiver  | r0"]
    assert "the last 200 lines of each log" in result.stderr


def test_a_bad_tail_is_a_usage_error(tmp_path: Path) -> None:
    _logs(tmp_path)
    result = mesh_cli(tmp_path, "logs", "--tail", "lots")
    assert result.returncode == 2
    assert "a number of lines, or all" in result.stderr
