"""`schema_registry.jsontext.loads`: json.loads's results and errors, preemptible for long texts
(a 6 MB schema's json.loads held the GIL ~40 ms from the reads served beside it)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import pytest

from schema_registry.jsontext import PREEMPTIBLE_FROM, loads

LONG = PREEMPTIBLE_FROM + 1


def _padded(value: Any) -> str:
    """``value`` as JSON, padded with whitespace past the preemptible threshold."""
    text = json.dumps(value)
    return text + " " * max(0, LONG - len(text))


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, "é", None, True, {"b": []}], "big": 10**30},
        [{"name": f"f{i}", "type": "string", "default": ""} for i in range(2000)],
    ],
)
def test_long_texts_decode_as_json_loads_does(value: Any) -> None:
    text = _padded(value)
    assert loads(text) == json.loads(text) == value
    assert loads(text.encode()) == value
    assert loads(text.encode("utf-16")) == value


@pytest.mark.parametrize(
    "text",
    ['{"a": ', '{"a": 1,}', '"\\x"', "{'a': 1}"],
)
def test_long_texts_fail_as_json_loads_fails(text: str) -> None:
    padded = text + " " * LONG
    with pytest.raises(json.JSONDecodeError):
        json.loads(padded)
    with pytest.raises(json.JSONDecodeError):
        loads(padded)


def test_parse_constant_and_digit_limits_hold_for_long_texts() -> None:
    def refuse(name: str) -> Any:
        raise ValueError(f"no {name}")

    with pytest.raises(ValueError, match="no NaN"):
        loads("[NaN]" + " " * LONG, parse_constant=refuse)
    with pytest.raises(ValueError, match="digits"):
        loads("[" + "1" * 5000 + "]" + " " * LONG)


def test_a_long_parse_lets_another_thread_run() -> None:
    # The point of it: a thread parsing megabytes must not hold the GIL throughout. Count how
    # often another thread gets to run during one long parse; json.loads lets it run ~never.
    text = json.dumps([{"name": f"f{i}", "type": "string"} for i in range(60_000)])
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        began = ticks
        loads(text)
        during = ticks - began
    finally:
        done.set()
        ticker.join()
        sys.setswitchinterval(previous)
    assert during > 10, f"the other thread ran {during} times during the parse"
