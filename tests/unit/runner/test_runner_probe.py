"""The runner's port probe: a listener is seen, a free port is not, and a probe that connected to
itself (possible on loopback for ports in the ephemeral range, like 50051-50055) neither reports a
listener nor leaves a TIME_WAIT that would make the real server's bind fail."""

from __future__ import annotations

import socket

from support.mesh import free_port

from mesh_runner.processes import port_open, probe


def test_a_listener_is_open_and_a_free_port_is_not() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", port)


def test_a_self_connection_is_not_a_listener_and_leaves_the_port_bindable() -> None:
    port = free_port()
    sock = socket.socket()
    # The source port the kernel would pick by bad luck, forced: connecting to it is then a TCP
    # simultaneous open with itself, which succeeds although nothing listens.
    sock.bind(("127.0.0.1", port))
    assert probe(sock, ("127.0.0.1", port)) is False
    sock.close()
    # Without the reset, the self-connected socket would sit in TIME_WAIT for 60 s and this
    # bind (a server's, without SO_REUSEADDR on the old socket) would fail: EADDRINUSE.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_open("127.0.0.1", port)
