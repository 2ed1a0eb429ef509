"""Control: the mesh's control plane (mesh.control.v1): configuration pushed live, feature flags
and experiments.

ConfigService stores a JSON document per namespace (``orders``, ``flags``, ``experiments``...),
versioned 1, 2, 3... with author and reason, each version checked against the JSON Schema
registered for its namespace (the schemas shipped in the contracts packages are registered at
start); an invalid one is refused naming the field. Rollback restores an earlier version as a
new one. Watch streams the current version, then every change, to each service's config client
(meshkit.control), which resumes from the last version it saw and reports ACK or NACK
(ListClientStatus). ExperimentService analyses the experiments from experiments.events.v1.
`mesh config`, `mesh flags` and `mesh experiments` are the command-line way in.
"""
