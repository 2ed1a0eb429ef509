"""gateway: the HTTP edge (127.0.0.1:8080) in front of the gRPC mesh."""
