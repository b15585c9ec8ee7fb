"""A minimal, fast WebSocket server for the benchmarks (its own process, plain sockets).

    python bench/wsserver.py --port P --scenario '{"kind": "trade", ...}' --stats FILE

It speaks just enough of Binance's combined-stream protocol for the streamkit pipeline and the
baseline clients: the HTTP upgrade, ``SUBSCRIBE`` requests answered with
``{"result":null,"id":n}``, streams named in the upgrade URL (``GET /stream?streams=a/b``,
the way cryptofeed subscribes: registered at the handshake, no ack), a REST depth snapshot
(``GET /api/v3/depth`` -> an empty book with ``lastUpdateId`` 1), PING/PONG and close
frames. Data frames are built before timing (:mod:`frames`); at write time only the 16-digit
timestamp is patched in place, so the server spends well under a microsecond per message in
burst mode and one ``send`` syscall per message in paced mode (one message per packet, the
case that hurts event-loop readers).

Once ``conns`` connections have subscribed (each to ``streams_per_conn`` streams), one sender
thread streams ``count`` messages per connection, round-robin over the connections, either as
fast as the sockets take them (``rate`` 0: chunks of pre-joined frames) or paced at ``rate``
messages per second per connection. ``ping_every`` sends PING frames instead (the idle
scenario). It writes its own CPU time and send duration to ``--stats`` when done.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frames import TS_BASE, TS_WIDTH, build_frame, ws_header

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_CHUNK = 256  # frames per write in burst mode


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _now_ts() -> bytes:
    ts = str(TS_BASE + time.monotonic_ns() // 1000).encode()
    if len(ts) != TS_WIDTH:  # after ~96 days of uptime: the frames' fixed width breaks
        raise SystemExit(f"write time {ts!r} does not fit the frames' {TS_WIDTH} digits")
    return ts


def url_streams(request_line: bytes) -> list[str]:
    """The streams of a combined-stream URL (``GET /stream?streams=a@aggTrade/b@aggTrade``)."""
    parts = request_line.split(b" ")
    if len(parts) < 2:
        return []
    query = parse_qs(urlsplit(parts[1].decode()).query)
    return [s for value in query.get("streams", []) for s in value.split("/") if s]


class Conn:
    """One accepted client: its socket, a write lock, and the streams it subscribed to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.streams: list[str] = []
        self.frames: list[tuple[bytes, int]] = []
        self.chunks: list[tuple[bytearray, list[int]]] = []

    def send(self, data: bytes | bytearray) -> None:
        with self.lock:
            self.sock.sendall(data)


class Server:
    def __init__(self, scenario: dict[str, Any]) -> None:
        self.sc = scenario
        self.conns: list[Conn] = []
        self.ready = threading.Condition()

    # --- per-connection reader thread ------------------------------------------------------

    def handle(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            request, _, rest = head.partition(b"\r\n\r\n")
            lines = request.split(b"\r\n")
            if b"/api/v3/depth" in lines[0]:
                body = b'{"lastUpdateId":1,"bids":[],"asks":[]}'
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
                sock.close()
                return
            key = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            conn = Conn(sock)
            conn.streams += url_streams(lines[0])
            self.read_frames(conn, rest)
        except OSError:
            pass

    def register(self, conn: Conn) -> bool:
        """Count ``conn`` in once it has all its streams (by SUBSCRIBE or in its URL)."""
        if len(conn.streams) < self.sc["streams_per_conn"]:
            return False
        with self.ready:
            self.conns.append(conn)
            self.ready.notify_all()
        return True

    def read_frames(self, conn: Conn, buf: bytes) -> None:
        sock = conn.sock
        registered = self.register(conn)
        while True:
            while len(buf) >= 2:
                opcode = buf[0] & 0x0F
                n = buf[1] & 0x7F
                pos = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, pos = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, pos = int.from_bytes(buf[2:10], "big"), 10
                masked = buf[1] & 0x80
                if len(buf) < pos + (4 if masked else 0) + n:
                    break
                payload = buf[pos + (4 if masked else 0) : pos + (4 if masked else 0) + n]
                if masked:
                    mask = buf[pos : pos + 4]
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                buf = buf[pos + (4 if masked else 0) + n :]
                if opcode == 0x8:  # close: answer and stop
                    conn.send(ws_header(len(payload[:2]), 0x8) + payload[:2])
                    return
                if opcode == 0x9:  # ping -> pong
                    conn.send(ws_header(len(payload), 0xA) + payload)
                elif opcode == 0x1:
                    msg = json.loads(payload)
                    if msg.get("method") == "SUBSCRIBE":
                        conn.streams += msg["params"]
                        conn.send(
                            ws_header(len(ack := b'{"result":null,"id":%d}' % msg["id"])) + ack
                        )
                        if not registered:
                            registered = self.register(conn)
            data = sock.recv(65536)
            if not data:
                return
            buf += data

    def accept_loop(self, listener: socket.socket) -> None:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=self.handle, args=(sock,), daemon=True).start()

    # --- the sender --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Build every frame (and, for bursts, the joined chunks) before timing."""
        sc = self.sc
        symbol_of = {}
        for conn in self.conns:
            stream = conn.streams[0]
            symbol_of[id(conn)] = stream.split("@", 1)[0].upper()
            conn.frames = [
                build_frame(sc["kind"], stream, symbol_of[id(conn)], seq)
                for seq in range(sc["count"])
            ]
            if sc["rate"] == 0:
                for start in range(0, len(conn.frames), _CHUNK):
                    part = conn.frames[start : start + _CHUNK]
                    offsets, pos = [], 0
                    for frame, off in part:
                        offsets.append(pos + off)
                        pos += len(frame)
                    conn.chunks.append((bytearray(b"".join(f for f, _ in part)), offsets))

    def stream(self) -> dict[str, float]:
        sc = self.sc
        conns = self.conns
        cpu0, t0 = _cpu(), time.monotonic()
        if sc.get("ping_every"):
            end = t0 + sc["duration"]
            ping = ws_header(4, 0x9) + b"beat"
            while time.monotonic() < end:
                for conn in conns:
                    conn.send(ping)
                time.sleep(sc["ping_every"])
        elif sc["rate"] == 0:
            n_chunks = len(conns[0].chunks)
            for i in range(n_chunks):
                for conn in conns:
                    buf, offsets = conn.chunks[i]
                    ts = _now_ts()
                    for off in offsets:
                        buf[off : off + TS_WIDTH] = ts
                    conn.send(buf)
        else:
            total_rate = sc["rate"] * len(conns)
            k = 0
            total = sc["count"] * len(conns)
            n_conns = len(conns)
            perf = time.perf_counter
            start = perf()
            while k < total:
                target = start + k / total_rate
                now = perf()
                if target > now:
                    if target - now > 0.0004:
                        time.sleep(target - now - 0.0002)
                    while perf() < target:
                        pass
                conn = conns[k % n_conns]
                frame, off = conn.frames[k // n_conns]
                buf = bytearray(frame)
                buf[off : off + TS_WIDTH] = _now_ts()
                conn.send(buf)
                k += 1
        return {"server_send_s": time.monotonic() - t0, "server_cpu_s": _cpu() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    server = Server(json.loads(args.scenario))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    threading.Thread(target=server.accept_loop, args=(listener,), daemon=True).start()
    print("ready", flush=True)
    with server.ready:
        server.ready.wait_for(lambda: len(server.conns) >= server.sc["conns"])
    server.prepare()
    time.sleep(server.sc.get("start_delay", 0.3))
    stats = server.stream()
    args.stats.write_text(json.dumps(stats))
    time.sleep(3600)  # keep the connections open; the runner kills this process


if __name__ == "__main__":
    main()
