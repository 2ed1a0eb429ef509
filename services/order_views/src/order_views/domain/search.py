"""Turning what a person types into a safe SQLite FTS5 query.

Users type SKUs, order ids, names and bits of addresses, quotes and dashes included; FTS5's own
syntax (quotes, AND/OR/NOT/NEAR, ``column:``, ``*``, ``^``, parentheses) must never reach the
engine from them, or a stray quote becomes a syntax error. Each whitespace-separated word becomes
one FTS5 string (double quotes doubled), so ``mug-1a2b`` still matches as the adjacent tokens
``mug 1a2b`` and ``OR`` is just a word; all words must match (AND). The last word also matches as
a prefix, so a screen can search as the user types. Control characters (NUL included: FTS5
reads a string only up to its first NUL) separate words like whitespace does.
"""

from __future__ import annotations

import re

MAX_WORDS = 16
MAX_WORD_LENGTH = 128
_WORD = re.compile(r"\w")
_SEPARATORS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def fts_query(text: str) -> str | None:
    """The FTS5 MATCH expression for ``text``, or None when it has no searchable word (only
    punctuation, or blank): then nothing can match and there is nothing to ask the index."""
    words = [w[:MAX_WORD_LENGTH] for w in _SEPARATORS.split(text) if _WORD.search(w)][:MAX_WORDS]
    if not words:
        return None
    quoted = ['"' + word.replace('"', '""') + '"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)
