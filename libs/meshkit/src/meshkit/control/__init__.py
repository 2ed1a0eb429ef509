"""meshkit.control: the kit's side of the control plane (services/control).

- ``meshkit.control.config``: ``LiveConfig``, a namespace's document pushed live by the control
  service, validated by the service's own parse function (NACK on failure), kept on disk as the
  last known good; ``ctx.config(...)`` in a service.
- ``meshkit.control.flags``: ``MeshFlagProvider``, the OpenFeature provider of the ``flags``
  namespace (a flagd flag set evaluated in process by flagd's evaluator); ``ctx.flags`` in a
  service; ``parse_flag_set`` its parse, ``static_source`` a flag set given in code.
- ``meshkit.control.experiments``: ``Experiments``, deterministic assignment to the variants of
  the live ``experiments`` namespace (GrowthBook's hashing), exposures and conversions as events
  on experiments.events.v1; ``ctx.experiments`` in a service.

Each name below is re-exported from its module; a module adds its own import line.
"""

from meshkit.control.config import NAMESPACE_RE as NAMESPACE_RE
from meshkit.control.config import ConfigRejected as ConfigRejected
from meshkit.control.config import LiveConfig as LiveConfig
from meshkit.control.config import Snapshot as Snapshot
from meshkit.control.experiments import Assignment as Assignment
from meshkit.control.experiments import Experiment as Experiment
from meshkit.control.experiments import Experiments as Experiments
from meshkit.control.experiments import Variant as Variant
from meshkit.control.experiments import parse_experiments as parse_experiments
from meshkit.control.flags import FlagSource as FlagSource
from meshkit.control.flags import MeshFlagProvider as MeshFlagProvider
from meshkit.control.flags import StaticFlagSource as StaticFlagSource
from meshkit.control.flags import parse_flag_set as parse_flag_set
from meshkit.control.flags import static_source as static_source
