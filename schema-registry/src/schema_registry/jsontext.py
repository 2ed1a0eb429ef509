"""JSON parsing that never holds the GIL for long: `loads`.

The registry's writer thread parses request bodies and schema texts while the event loop serves
reads beside it. `json.loads` is one call into C: for a 6 MB schema (100,000 fields) it holds the
GIL for ~40 ms, and every read that arrived meanwhile waited that long; the switch interval
cannot cut a C call short. Above `PREEMPTIBLE_FROM` characters the text is parsed by the json
module's own pure-Python scanner instead (same decoder, same results and errors; ~8x slower, but
it yields the GIL every switch interval). Small texts, nearly all of them, keep the C parser.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any, Final

#: Texts this long or longer are parsed preemptibly (json.loads: ~3.5 ms of C at this size).
PREEMPTIBLE_FROM: Final = 512 * 1024


class _PreemptibleDecoder(json.JSONDecoder):
    """json's decoder with its pure-Python scanner: strings are still scanned in C, one short
    call each, but objects and arrays are built in Python, between which the GIL is released."""

    def __init__(self, *, parse_constant: Callable[[str], Any] | None = None) -> None:
        super().__init__(parse_constant=parse_constant)
        # typeshed lists only make_scanner; py_make_scanner is the same function in Python.
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]


def loads(text: str | bytes, *, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """`json.loads(text)`, raising what it raises (ValueError / JSONDecodeError,
    UnicodeDecodeError, RecursionError), but preemptible for long texts (module docstring)."""
    if len(text) < PREEMPTIBLE_FROM:
        return json.loads(text, parse_constant=parse_constant)
    if isinstance(text, bytes):
        # As json.loads reads bytes: UTF-8, -16 or -32 by the first bytes.
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _PreemptibleDecoder(parse_constant=parse_constant).decode(text)
