"""Order views' domain: the read model's records and the pure projector (no IO, no grpc, no gen)."""
