"""The common-password list the service ships (data/common-passwords.txt), for PasswordPolicy.

Read once per process and kept (the file is about 46,000 lines); the returned set is immutable, so
every thread may share it.
"""

from __future__ import annotations

import functools
from importlib import resources

from identity.domain.passwords import common_form

_PACKAGE = "identity"
_PATH = ("data", "common-passwords.txt")


@functools.cache
def load_common_passwords() -> frozenset[str]:
    """Every password in the shipped list in common_form() (NFKC, lower-case).

    Lines starting with "#" (the provenance header) and blank lines are skipped; only the line
    break is removed from the others, since spaces can be part of a password.
    """
    resource = resources.files(_PACKAGE)
    for part in _PATH:
        resource = resource / part
    text = resource.read_text(encoding="utf-8")
    return frozenset(
        common_form(line) for line in text.splitlines() if line and not line.startswith("#")
    )
