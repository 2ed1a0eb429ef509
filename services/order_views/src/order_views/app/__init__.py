"""Order views' use cases (projecting, querying, rebuilding) and the ports they need."""
