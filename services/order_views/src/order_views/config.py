"""Order views' own settings (``ORDER_VIEWS_*``), beyond what every service of the kit reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meshkit.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class Settings(ServiceSettings):
    """What order_views reads besides every service's settings (``python -m order_views --help``).

    ``db_path`` is the kit's (default ``.mesh/data/order_views.db``); only what it means here
    differs: the catalog of the read model's copies, not one database.
    """

    db_path: Path = dataclasses.field(
        default=ServiceSettings.db_path,
        metadata={
            "help": "SQLite catalog of the read model's copies; each copy is a file beside it"
            " (<stem>.g<N>.db)"
        },
    )
    rebuild_timeout_s: float = dataclasses.field(
        default=600.0,
        metadata={"help": "a rebuild not caught up after this long is abandoned", "min": 1.0},
    )
