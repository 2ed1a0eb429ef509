"""The schema registry: a Confluent-compatible REST server and the `schema-registry` CLI."""
