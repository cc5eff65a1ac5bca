"""The simulator's wire faults, seen on a raw socket: an interim response
before the answer, a body that trickles, a body that stalls."""

from __future__ import annotations

import json
import socket

import pytest

from llm_sync.testing import FaultKind, Simulator

KEY = "sk-sim-wire-1"
BODY = json.dumps({"model": "claude-3-5-haiku-20241022", "max_tokens": 20,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
REQUEST = (b"POST /v1/messages HTTP/1.1\r\nhost: sim\r\nx-api-key: " + KEY.encode()
           + b"\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
           + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)


@pytest.fixture
def sim():
    with Simulator(keys=(KEY,)) as simulator:
        yield simulator


def _exchange(sim: Simulator, timeout: float = 5.0) -> tuple[socket.socket, list[bytes]]:
    """Send REQUEST; read until the answer's JSON body is complete (or the
    socket times out / closes). Returns the socket and every recv."""
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=timeout)
    sock.sendall(REQUEST)
    reads: list[bytes] = []
    data = b""
    while True:
        final = data.split(b"HTTP/1.1 ")[-1]  # the last response begun
        head, _, body = final.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        if length and len(body) >= length[0]:
            return sock, reads
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return sock, reads
        if not chunk:
            return sock, reads
        reads.append(chunk)
        data += chunk


def test_an_interim_response_comes_before_the_answer_it_does_not_replace(sim):
    sim.inject_interim(103, headers={"link": "</a.css>; rel=preload"})
    sim.inject(529)
    assert [fault.kind for fault in sim.pending_faults()] == [FaultKind.INTERIM, FaultKind.STATUS]
    sock, reads = _exchange(sim)
    sock.close()
    data = b"".join(reads)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 529 ")
    assert sim.pending_faults() == []


def test_a_trickling_body_arrives_whole_in_small_pieces(sim):
    sim.inject_trickle(chunk_size=7, interval=0.01)  # ~40 pieces over ~0.4 s
    sock, reads = _exchange(sim)
    sock.close()
    data = b"".join(reads)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body)["content"][0]["text"]
    assert len(reads) >= 5  # pieces, not the whole body at once


def test_a_stalled_body_stops_after_the_given_bytes_until_the_client_hangs_up(sim):
    sim.inject_stall(after_bytes=25)
    sock, reads = _exchange(sim, timeout=0.5)  # ends by timing out: the server went quiet
    _, _, body = b"".join(reads).partition(b"\r\n\r\n")
    assert len(body) == 25
    sock.close()  # the simulator's handler wakes and drops the connection
    assert sim.request_count() == 1


@pytest.mark.parametrize("call", [
    lambda sim: sim.inject_interim(101), lambda sim: sim.inject_interim(200),
    lambda sim: sim.inject_trickle(chunk_size=0), lambda sim: sim.inject_trickle(interval=-1),
    lambda sim: sim.inject_trickle(interval=float("inf")), lambda sim: sim.inject_stall(after_bytes=-1),
])
def test_wire_faults_refuse_nonsense(sim, call):
    with pytest.raises(ValueError):
        call(sim)
