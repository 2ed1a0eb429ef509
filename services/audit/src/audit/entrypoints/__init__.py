"""Audit's entrypoints: the Kafka handler of AuditRecorded and the gRPC servicer."""
