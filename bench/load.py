"""Load on loopback: wrk with a Lua hook counting non-2xx answers, first-200
polling, slow clients that never finish their request headers, and idle
connections held open."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .proc import BenchError, run

HOST = "127.0.0.1"

# wrk counts only status >= 400 as errors; a 3xx redirect or a 1xx would pass
# unseen, so every response is checked here and summed over wrk's threads.
WRK_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d "
    .. "p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, bad, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float  # successful (2xx) responses per second
    requests: int
    bad: int  # non-2xx answers plus socket errors and timeouts
    p50_ms: float
    p99_ms: float
    detail: str = ""  # what the bad ones were


def get(port: int, path: str = "/", timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_for_200(port: int, timeout: float, alive: object = None, path: str = "/") -> float:
    """Seconds until ``path`` first answers 200 (polling every 10 ms)."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if alive is not None and not alive():  # type: ignore[operator]
            raise BenchError(f"server on port {port} exited before answering")
        try:
            if get(port, path, timeout=1.0) == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise BenchError(f"no 200 from port {port}{path} within {timeout:g} s")


def wait_port_free(port: int, timeout: float = 15) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
                return
            except OSError:
                time.sleep(0.05)
    raise BenchError(f"port {port} still in use after {timeout:g} s")


def wrk(wrk_bin: str, work: str, port: int, path: str, *, threads: int, connections: int, seconds: int) -> WrkResult:
    script = os.path.join(work, "count.lua")
    with open(script, "w") as handle:
        handle.write(WRK_LUA)
    out = run(
        [
            wrk_bin,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            script,
            f"http://{HOST}:{port}{path}",
        ],
        timeout=seconds + 60,
    ).output
    line = next((line for line in out.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary:\n{out}")
    values = {key: int(value) for key, value in (item.split("=") for item in line.split()[1:])}
    bad = values["non2xx"] + values["connect"] + values["read"] + values["write"] + values["timeout"]
    good = values["requests"] - values["non2xx"]
    return WrkResult(
        rps=good / (values["duration_us"] / 1e6),
        requests=values["requests"],
        bad=bad,
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        detail=", ".join(f"{k} {values[k]}" for k in ("non2xx", "connect", "read", "write", "timeout") if values[k]),
    )


@dataclass(frozen=True)
class SlowResult:
    held: int  # slow connections still open when the normal requests ran
    median_ms: float | None  # of the normal requests that got a 200 (None: none did)
    answered: int
    asked: int


def with_slow_clients(port: int, *, slow: int, asked: int, timeout: float) -> SlowResult:
    """Normal requests while ``slow`` connections each hold half a request header open."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(slow):
            sock = socket.create_connection((HOST, port), timeout=2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n")  # never the final blank line
            sockets.append(sock)
        time.sleep(0.5)  # let the server hand them to its workers
        times: list[float] = []
        misses = 0
        for _ in range(asked):
            started = time.perf_counter()
            try:
                if get(port, "/", timeout=timeout) == 200:
                    times.append(time.perf_counter() - started)
                    misses = 0
                    continue
            except OSError:
                pass
            misses += 1
            if misses == 3 and not times:
                break  # blocked: the rest would time out the same way (and count as unanswered)
        held = sum(1 for sock in sockets if _still_open(sock))
        return SlowResult(held, statistics.median(times) * 1000 if times else None, len(times), asked)
    finally:
        for sock in sockets:
            sock.close()


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def raise_open_files(want: int) -> int:
    """The soft open-files limit raised to ``want`` (at most the hard limit): the connections held here are files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


@contextmanager
def holding_slow(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each sent half a request header and then nothing, held until the block ends."""
    raise_open_files(count + 256)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n")  # never the final blank line
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def holding_idle(port: int, count: int, path: str) -> Iterator[list[socket.socket]]:
    """``count`` idle connections held until the block ends: the first half after one keep-alive request
    for ``path`` (answered 200), the other half opened and never used."""
    raise_open_files(count + 256)
    conns: list[http.client.HTTPConnection] = []
    sockets: list[socket.socket] = []
    try:
        for _ in range(count // 2):
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conns.append(conn)
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200 or response.will_close:
                raise BenchError(f"port {port}{path}: {response.status}, will_close={response.will_close}")
            if conn.sock is not None:
                sockets.append(conn.sock)
        for _ in range(count - count // 2):
            sockets.append(socket.create_connection((HOST, port), timeout=2))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        for conn in conns:
            conn.close()


def still_open(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has not closed."""
    return sum(1 for sock in sockets if _still_open(sock))
