"""meshkit.control: the kit's side of the control plane (services/control).

- ``meshkit.control.config``: ``LiveConfig``, a namespace's document pushed live by the control
  service, validated by the service's own parse function (NACK on failure), kept on disk as the
  last known good; ``ctx.config(...)`` in a service.

Each name below is re-exported from its module; a module adds its own import line.
"""

from meshkit.control.config import NAMESPACE_RE as NAMESPACE_RE
from meshkit.control.config import ConfigRejected as ConfigRejected
from meshkit.control.config import LiveConfig as LiveConfig
from meshkit.control.config import Snapshot as Snapshot
