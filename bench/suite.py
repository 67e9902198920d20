"""The benchmark sections. Every comparison runs its sides interleaved in
the same run (A B C, B C A, ...) and reports medians and ratios."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

from . import load as http
from .djangoapp import touch_view
from .measure import Samples, Section, Target, load, median, ratio, rotations, secs, times
from .proc import BenchError, run
from .servers import Config, gunicorn, mod_wsgi, start, warp_auto, warp_direct, warpdrive_default
from .sides import Plain, Side, Warp, Warpdrive
from .tools import Tools, launcher

AT_LEAST_17 = "automatic choice at least 1.7x warpdrive's default"
WITHIN_10 = "automatic choice within 10% of the best hand-tuned mod_wsgi setting"
EXTRA_REQUIREMENT = "six"  # small, pure Python, not needed by Django


@dataclass(frozen=True)
class Settings:
    build_runs: int
    quick_runs: int  # for the sub-second measurements
    load_rounds: int
    wrk_seconds: int
    wrk_threads: int
    wrk_connections: int
    slow_clients: int
    slow_asked: int
    sweep: bool  # the hand-tuned sweep (off in --quick but for one setting per server)


FULL = Settings(
    build_runs=3,
    quick_runs=5,
    load_rounds=4,
    wrk_seconds=6,
    wrk_threads=2,
    wrk_connections=20,
    slow_clients=200,
    slow_asked=10,
    sweep=True,
)
QUICK = Settings(
    build_runs=1,
    quick_runs=2,
    load_rounds=1,
    wrk_seconds=3,
    wrk_threads=2,
    wrk_connections=20,
    slow_clients=200,
    slow_asked=5,
    sweep=False,
)


@dataclass
class Bench:
    tools: Tools
    warp: Warp
    wd: Warpdrive
    plain: Plain
    settings: Settings
    logs: str
    say: object = print
    port: int = 18400
    facts: dict[str, str] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # target -> what limits it (shown when not met)
    rps: dict[str, float | None] = field(default_factory=dict)  # throughput medians, by configuration
    slow: dict[str, tuple[float | None, int, int]] = field(default_factory=dict)  # median ms, answered, asked

    @property
    def sides(self) -> list[Side]:
        return [self.warp, self.wd, self.plain]

    def next_port(self) -> int:
        self.port += 1
        return self.port

    @property
    def settings_note(self) -> str:
        return "two daemon processes (one per CPU) that each import Django at start, where warpdrive's default starts one"

    def note(self, text: str) -> None:
        self.say(text)  # type: ignore[operator]


def _section(title: str, intro: str) -> Section:
    return Section(title, intro, load_before=load())


# 1. cold builds -------------------------------------------------------------


def empty_cache_builds(b: Bench) -> Section:
    s = _section(
        "Build with empty package caches (one run each)",
        "Each side starts from its own empty package cache: downloads, and compiling mod_wsgi. "
        "One run each, sequential (the first run fills the caches the next sections use), so this row "
        "is indicative only.",
    )
    rows = []
    for side in b.sides:
        side.drop_cache()
        took = side.cold_build()
        b.note(f"  empty-cache build {side.name}: {took:.2f} s")
        rows.append([side.name, secs(took)])
    s.table(["side", "time"], rows)
    s.load_after = load()
    return s


def cold_builds(b: Bench) -> Section:
    s = _section(
        "1. Cold build",
        "No environment, no collected static files; each side's own package cache is warm (filled by the "
        "previous section's build), the same state for every side. warptasks: `warp build`. warpdrive: "
        "`warpdrive activate NAME` (creates the virtualenv and installs warpdrive into it) then `warpdrive "
        "build`. Plain: `python -m venv` then `pip install -r requirements.txt mod_wsgi` then `manage.py "
        "collectstatic`.",
    )
    samples = Samples()
    b.warp.outputs.clear()
    for n, order in rotations(b.sides, b.settings.build_runs):
        for side in order:
            samples.add(side.name, side.cold_build())
        b.note(f"  cold build round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in samples.values.items()))
    _comparison(s, samples, b.warp.name, [b.wd.name, b.plain.name])
    warp, wd = samples.median(b.warp.name), samples.median(b.wd.name)
    target = "cold build at most half of warpdrive's time"
    s.targets.append(Target(target, _le(warp, wd, 0.5), f"{secs(warp)} vs {secs(wd)} ({times(ratio(warp, wd))} of warpdrive's)"))
    compiled = sum(1 for out in b.warp.outputs if "Building mod-wsgi" in out)
    if compiled:
        note = (
            f"warptasks compiled mod_wsgi from source again in {compiled} of {len(b.warp.outputs)} cold builds, although "
            "its per-Python cache held the previous build: uv revalidates the sdist with the package index and rebuilds "
            "when the index sends no caching headers (the index this machine reaches sends none; PyPI's file host "
            "marks files immutable). pip (warpdrive, plain) keeps the wheel it built keyed by the file's URL and "
            "reuses it. A per-Python wheel of mod_wsgi kept by warptasks itself would remove this from every new "
            "environment."
        )
        s.notes.append(note)
        b.why[target] = note
    s.load_after = load()
    return s


def _le(a: float | None, b: float | None, factor: float) -> bool | None:
    return None if a is None or b is None else a <= b * factor


def _comparison(s: Section, samples: Samples, subject: str, others: list[str], fmt: str = "{:.2f}") -> None:
    rows = []
    base = samples.median(subject)
    for name in [subject, *others]:
        value = samples.median(name)
        rows.append([name, secs(value), samples.runs(name, fmt), times(ratio(value, base))])
    s.table(["side", "median", "runs (s)", "time / warptasks' time"], rows)


# 2, 3. rebuilds -------------------------------------------------------------


def rebuilds(b: Bench) -> Section:
    s = _section(
        "2, 3. Rebuilds",
        "Each side rebuilt in place after its cold build. No-op: nothing changed. Code change: one line added to "
        "the view module. Requirement: one line (`six`) added to requirements.txt; before each run the "
        "requirement is taken out again (uninstalled from warpdrive's and the plain environment; for warptasks "
        "any environment other than the current one is deleted, so no earlier build can be reused).",
    )
    for side in b.sides:
        if not _built(side):
            side.cold_build()
    noop, code, req = Samples(), Samples(), Samples()
    for _, order in rotations(b.sides, b.settings.quick_runs):
        for side in order:
            noop.add(side.name, side.rebuild())
    for n, order in rotations(b.sides, b.settings.build_runs):
        for side in order:
            touch_view(side.project, n + 1)
            code.add(side.name, side.rebuild())
    baseline = open(b.warp.requirements).read()
    for _, order in rotations(b.sides, b.settings.build_runs):
        for side in order:
            if isinstance(side, Warp):
                side.forget_other_envs()
            with open(side.requirements, "a") as handle:
                handle.write(f"{EXTRA_REQUIREMENT}\n")
            req.add(side.name, side.rebuild())
        for side in b.sides:  # back to the baseline, outside the measurement
            with open(side.requirements, "w") as handle:
                handle.write(baseline)
            if isinstance(side, Warp):
                side.rebuild()
            else:
                pip = os.path.join(side.bin if isinstance(side, Plain) else side.env["VIRTUAL_ENV"] + "/bin", "pip")
                run([pip, "uninstall", "-y", "-q", EXTRA_REQUIREMENT], env=side.env)
    rows = []
    for title, samples in (("no-op", noop), ("one-line code change", code), ("one requirement added", req)):
        base = samples.median(b.warp.name)
        for side in b.sides:
            value = samples.median(side.name)
            rows.append([title, side.name, secs(value), samples.runs(side.name), times(ratio(value, base))])
    s.table(["rebuild after", "side", "median", "runs (s)", "time / warptasks' time"], rows)
    warp, wd = noop.median(b.warp.name), noop.median(b.wd.name)
    s.targets.append(Target("no-op rebuild under 0.3 s", None if warp is None else warp < 0.3, secs(warp)))
    s.targets.append(
        Target(
            "no-op rebuild at least 4x faster than warpdrive's",
            _le(warp, wd, 0.25),
            f"{secs(warp)} vs {secs(wd)}: warpdrive takes {times(ratio(wd, warp))} of warptasks' time",
        )
    )
    s.notes.append(
        "The plain side has no notion of a no-op: it reruns `pip install -r` and `collectstatic` every time. "
        "warptasks builds a new environment beside the current one when a dependency file changes (the old one "
        "keeps serving until the switch), so adding a requirement costs about a cold build; warpdrive and the "
        "plain script install into the live environment."
    )
    s.load_after = load()
    return s


def _built(side: Side) -> bool:
    if isinstance(side, Warp):
        return os.path.exists(os.path.join(side.bin, "mod_wsgi-express"))
    if isinstance(side, Plain):
        return os.path.exists(os.path.join(side.bin, "mod_wsgi-express"))
    return "VIRTUAL_ENV" in side.env and os.path.exists(os.path.join(side.env["VIRTUAL_ENV"], "bin", "mod_wsgi-express"))


# 4, 6. start and stop -------------------------------------------------------


def start_stop(b: Bench) -> Section:
    s = _section(
        "4, 6. Start to first 200, and stop",
        "From spawning `warp start` / `warpdrive start` (both exec the server, so signals reach it) until "
        "`GET /` first answers 200 (polled every 10 ms); then SIGTERM to that process until it has exited.",
    )
    configs = [warp_auto(b.warp), warpdrive_default(b.wd), warp_direct(b.warp)]
    started, stopped = Samples(), Samples()
    for _, order in rotations(configs, b.settings.quick_runs):
        for config in order:
            server, took = start(config, b.next_port(), b.logs)
            started.add(config.name, took)
            stopped.add(config.name, server.stop())
    rows = []
    for config in configs:
        rows.append(
            [
                config.name,
                secs(started.median(config.name)),
                started.runs(config.name),
                secs(stopped.median(config.name)),
                stopped.runs(config.name),
            ]
        )
    s.table(["side", "start to first 200 (median)", "runs (s)", "SIGTERM to exit (median)", "runs (s)"], rows)
    w, d = started.median(configs[0].name), started.median(configs[1].name)
    s.targets.append(
        Target(
            "start to first 200 no slower than warpdrive",
            _le(w, d, 1.0),
            f"{secs(w)} vs {secs(d)}: warptasks takes {times(ratio(w, d))} of warpdrive's time",
        )
    )
    ws, ds = stopped.median(configs[0].name), stopped.median(configs[1].name)
    s.notes.append(
        f"Stop: warptasks {secs(ws)} vs warpdrive {secs(ds)} ({times(ratio(ws, ds))} of warpdrive's time). "
        "A stop that had to be ended with SIGKILL after 20 s shows as '-'."
    )
    direct = started.median(configs[2].name)
    if w is not None and direct is not None:
        s.notes.append(
            f"The third row runs the server command `warp start` execs, directly: the difference "
            f"({secs(w - direct)}) is warptasks' own start-up (its Python CLI, reading the target, and one Python "
            "process for the port check and, as root, the check that Apache's account can read the environment)."
        )
        b.why["start to first 200 no slower than warpdrive"] = (
            f"Of warptasks' {secs(w)}, {secs(w - direct)} is its own start-up before it execs mod_wsgi-express (Python "
            "and invoke start-up, detection, and one Python process for the port and worker-can-read checks); the "
            f"server itself took {secs(direct)}. mod_wsgi-express then starts Apache and {b.settings_note}."
        )
    s.load_after = load()
    return s


# 4b. warptasks' own start-up, whole processes measured from outside ---------

STARTUP_START = "start to first 200 at most 0.8x warpdrive's"
STARTUP_BUILD = "no-op warp build under 0.2 s as a whole process"


def startup(b: Bench) -> Section:
    """Whole processes timed from outside (spawn to exit, or to the first 200): Python's and invoke's start-up included."""
    s = _section(
        "4b. warptasks' own start-up, whole processes",
        "Each command spawned as a user runs it and timed from outside until it exits (for a start: until `GET /` "
        "first answers 200), interleaved with warpdrive's where warpdrive has the same command; figures include "
        "the interpreter's and invoke's start-up, which an in-process figure hides. 'warptasks' own' is the "
        "start minus its server command run directly.",
    )
    runs = max(b.settings.quick_runs * 2, 4)
    help_, noop = Samples(), Samples()
    if not _built(b.warp) or not _built(b.wd):
        prepare_builds(b)
    # WARP_BENCH_BASELINE=<another checkout>: its warp too, interleaved, on the same project (a before/after).
    baseline_root = os.environ.get("WARP_BENCH_BASELINE")
    baseline = None
    if baseline_root:
        baseline = Warp("warptasks (baseline)", replace(b.tools, warp=launcher(baseline_root)), b.warp.project, b.warp.cache)
        baseline.env = b.warp.env
    warps = [b.warp] + ([baseline] if baseline else [])
    for _, order in rotations(warps, runs):
        for side in order:
            help_.add(side.name, run([*side.tools.warp, "--help"], env=side.env).seconds)
    for _, order in rotations([*warps, b.wd], runs):
        for side in order:
            noop.add(side.name, side.rebuild())
    configs = [warp_auto(b.warp), warpdrive_default(b.wd), warp_direct(b.warp)]
    if baseline:
        configs.append(replace(warp_auto(baseline), name="warp start (baseline)"))
    started = Samples()
    for _, order in rotations(configs, runs):
        for config in order:
            server, took = start(config, b.next_port(), b.logs)
            started.add(config.name, took)
            server.stop()
    w, d, direct = (started.median(c.name) for c in configs[:3])
    own = None if w is None or direct is None else w - direct
    wb, db = noop.median(b.warp.name), noop.median(b.wd.name)
    rows = [
        ["`warp --help`", secs(help_.median(b.warp.name)), help_.runs(b.warp.name), "-", "-", "-"],
        [
            "no-op build (`warp build` / `warpdrive build`)",
            secs(wb),
            noop.runs(b.warp.name),
            secs(db),
            noop.runs(b.wd.name),
            times(ratio(wb, db)),
        ],
        [
            "start to first 200 (`warp start` / `warpdrive start`)",
            secs(w),
            started.runs(configs[0].name),
            secs(d),
            started.runs(configs[1].name),
            times(ratio(w, d)),
        ],
        [
            "warp start's server command run directly",
            secs(direct),
            started.runs(configs[2].name),
            "-",
            "-",
            times(ratio(direct, d)),
        ],
        ["warptasks' own start-up (start minus its server command)", secs(own), "-", "-", "-", "-"],
    ]
    if baseline:
        bw = started.median("warp start (baseline)")
        rows += [
            ["baseline `warp --help`", secs(help_.median(baseline.name)), help_.runs(baseline.name), "-", "-", "-"],
            [
                "baseline no-op `warp build`",
                secs(noop.median(baseline.name)),
                noop.runs(baseline.name),
                secs(db),
                "-",
                times(ratio(noop.median(baseline.name), db)),
            ],
            [
                "baseline `warp start` to first 200",
                secs(bw),
                started.runs("warp start (baseline)"),
                secs(d),
                "-",
                times(ratio(bw, d)),
            ],
        ]
        s.notes.append(f"Baseline: the checkout at {baseline_root} (WARP_BENCH_BASELINE), run the same way on the same project.")
    s.table(["whole process", "warptasks (median)", "runs (s)", "warpdrive (median)", "runs (s)", "warptasks / warpdrive"], rows)
    s.targets.append(Target(STARTUP_BUILD, None if wb is None else wb < 0.2, secs(wb)))
    s.targets.append(
        Target(STARTUP_START, _le(w, d, 0.8), f"{secs(w)} vs {secs(d)}: warptasks takes {times(ratio(w, d))} of warpdrive's time")
    )
    if own is not None and direct is not None:
        b.why[STARTUP_START] = (
            f"Of warptasks' {secs(w)}, {secs(own)} is its own start-up (Python and invoke start-up, detection, the kept "
            "facts and one Python process for the port and worker-can-read checks); its server command alone took "
            f"{secs(direct)} ({times(ratio(direct, d))} of warpdrive's whole start). mod_wsgi-express then starts Apache "
            f"and {b.settings_note}."
        )
    s.load_after = load()
    return s


# 5. throughput --------------------------------------------------------------


def _configs(b: Bench) -> list[Config]:
    work = b.tools.work
    configs = [warp_auto(b.warp), warpdrive_default(b.wd), gunicorn(b.plain, "gunicorn default (1 sync worker)", (), "default")]
    if b.settings.sweep:
        configs += [
            # Daemon mode with the capacity warp start gives Apache: at mod_wsgi-express's default (20 clients)
            # wrk's 20 connections fill it and the event MPM drops keep-alive connections (read errors).
            mod_wsgi(b.warp, work, "mod_wsgi daemon 2x1", 2, 1, max_clients=400),
            mod_wsgi(b.warp, work, "mod_wsgi daemon 2x5", 2, 5, max_clients=400),
            mod_wsgi(b.warp, work, "mod_wsgi daemon 4x1", 4, 1, max_clients=400),
            mod_wsgi(b.warp, work, "mod_wsgi embedded 2x1", 2, 1, embedded=True),
            mod_wsgi(b.warp, work, "mod_wsgi embedded 2x10", 2, 10, embedded=True),
            mod_wsgi(b.warp, work, "mod_wsgi embedded 2x200", 2, 200, embedded=True),
            gunicorn(b.plain, "gunicorn 2 sync", ("--workers", "2")),
            gunicorn(b.plain, "gunicorn 3 sync", ("--workers", "3")),
            gunicorn(b.plain, "gunicorn gthread 2x4", ("--workers", "2", "--threads", "4")),
        ]
    else:
        configs += [
            mod_wsgi(b.warp, work, "mod_wsgi embedded 2x1", 2, 1, embedded=True),
            gunicorn(b.plain, "gunicorn 2 sync", ("--workers", "2")),
        ]
    return configs


def ensure_gunicorn(b: Bench) -> None:
    if not os.path.exists(os.path.join(b.plain.bin, "gunicorn")):
        run([os.path.join(b.plain.bin, "pip"), "install", "-q", "gunicorn"], env=b.plain.env)


def auto_choice(b: Bench) -> str:
    """What `warp start` chose by itself, from the notes of `warp plan --json`."""
    out = run([*b.tools.warp, "plan", "--project", b.warp.project, "--python", b.tools.python, "--json"], env=b.warp.env).output
    notes = json.loads(out[out.index("{") :])["start"]["notes"]
    return "; ".join(note for note in notes if note.startswith(("workers:", "resources:"))) or "?"


def throughput(b: Bench) -> Section:
    st = b.settings
    s = _section(
        "5. Throughput and latency",
        f"`wrk -t{st.wrk_threads} -c{st.wrk_connections} -d{st.wrk_seconds}s` on 127.0.0.1 against the template view, "
        f"after a 1 s warm-up, {st.load_rounds} interleaved round(s); every response is checked (a Lua hook counts "
        "non-2xx; socket errors and timeouts count too). req/s counts 2xx answers only.",
    )
    ensure_gunicorn(b)
    configs = _configs(b)
    chosen = auto_choice(b)
    b.facts["auto_workers"] = chosen
    s.intro += f" `warp start` chose: {chosen}."
    rps, p50, p99, bad = Samples(), Samples(), Samples(), Samples()
    for n, order in rotations(configs, st.load_rounds):
        for config in order:
            port = b.next_port()
            server, _ = start(config, port, b.logs)
            try:
                http.wrk(b.tools.wrk, b.tools.work, port, "/", threads=st.wrk_threads, connections=st.wrk_connections, seconds=1)
                result = http.wrk(
                    b.tools.wrk,
                    b.tools.work,
                    port,
                    "/",
                    threads=st.wrk_threads,
                    connections=st.wrk_connections,
                    seconds=st.wrk_seconds,
                )
            finally:
                server.stop()
            rps.add(config.name, result.rps)
            p50.add(config.name, result.p50_ms)
            p99.add(config.name, result.p99_ms)
            bad.add(config.name, result.bad)
            b.note(
                f"  round {n + 1} {config.name}: {result.rps:.0f} req/s p50 {result.p50_ms:.1f} ms p99 "
                f"{result.p99_ms:.1f} ms bad {result.bad} {result.detail}"
            )
    reference = rps.median(configs[1].name)
    rows = []
    for config in configs:
        value = rps.median(config.name)
        b.rps[config.name] = value
        failures = sum(int(v or 0) for v in bad.values.get(config.name, []))
        rows.append(
            [
                config.name,
                config.role,
                f"{value:.0f}" if value else "-",
                rps.runs(config.name, "{:.0f}"),
                f"{p50.median(config.name):.1f}",
                f"{p99.median(config.name):.1f}",
                str(failures),
                times(ratio(value, reference)),
            ]
        )
    s.table(
        ["configuration", "role", "req/s (median)", "runs", "p50 ms", "p99 ms", "non-2xx/errors", "vs warpdrive default"], rows
    )
    auto = configs[0]
    auto_rps = rps.median(auto.name)
    clean = {
        c.name: rps.median(c.name)
        for c in configs
        if c.family == auto.family and c.role == "tuned" and not any(bad.values.get(c.name, []))
    }
    s.targets.append(
        Target(
            AT_LEAST_17,
            _le(1.7 * (reference or 0), auto_rps, 1.0) if auto_rps and reference else None,
            f"{auto_rps or 0:.0f} vs {reference or 0:.0f} req/s: {times(ratio(auto_rps, reference))}",
        )
    )
    if clean:
        best_name = max(clean, key=lambda k: clean[k] or 0)
        best = clean[best_name]
        b.facts["best_tuned"] = best_name
        s.targets.append(
            Target(
                WITHIN_10,
                None if not auto_rps or not best else auto_rps >= 0.9 * best,
                f"{auto_rps or 0:.0f} vs {best or 0:.0f} req/s ({best_name}): {times(ratio(auto_rps, best))}",
            )
        )
    s.load_after = load()
    b.facts["throughput_load"] = f"{s.load_before} before, {s.load_after} after (1/5/15 min)"
    return s


def static_files(b: Bench) -> Section:
    st = b.settings
    s = _section(
        "5b. Static files",
        f"The collected CSS file (`/static/bench/site.css`, served by Apache through an alias on both sides), "
        f"`wrk -t{st.wrk_threads} -c{st.wrk_connections} -d{max(3, st.wrk_seconds // 2)}s`.",
    )
    configs = [warp_auto(b.warp), warpdrive_default(b.wd)]
    rps, p99, bad = Samples(), Samples(), Samples()
    for _, order in rotations(configs, st.load_rounds):
        for config in order:
            port = b.next_port()
            server, _ = start(config, port, b.logs)
            try:
                if http.get(port, "/static/bench/site.css") != 200:
                    raise BenchError(f"{config.name}: the CSS file is not served")
                result = http.wrk(
                    b.tools.wrk,
                    b.tools.work,
                    port,
                    "/static/bench/site.css",
                    threads=st.wrk_threads,
                    connections=st.wrk_connections,
                    seconds=max(3, st.wrk_seconds // 2),
                )
            finally:
                server.stop()
            rps.add(config.name, result.rps)
            p99.add(config.name, result.p99_ms)
            bad.add(config.name, result.bad)
    reference = rps.median(configs[1].name)
    s.table(
        ["configuration", "req/s (median)", "runs", "p99 ms", "non-2xx/errors", "vs warpdrive"],
        [
            [
                c.name,
                f"{rps.median(c.name) or 0:.0f}",
                rps.runs(c.name, "{:.0f}"),
                f"{p99.median(c.name) or 0:.1f}",
                str(sum(int(v or 0) for v in bad.values.get(c.name, []))),
                times(ratio(rps.median(c.name), reference)),
            ]
            for c in configs
        ],
    )
    s.load_after = load()
    return s


def slow_clients(b: Bench) -> Section:
    st = b.settings
    s = _section(
        "5c. A normal request while slow clients hold connections",
        f"{st.slow_clients} connections each send half a request header and then nothing (held for the length of "
        f"the measurement, a few seconds); meanwhile {st.slow_asked} normal `GET /` requests are made one after "
        "another, each given 2 s (after 3 unanswered in a row and none answered, the rest count as unanswered). "
        "Median latency of those answered 200.",
    )
    ensure_gunicorn(b)
    configs = [
        warp_auto(b.warp),
        warpdrive_default(b.wd),
        gunicorn(b.plain, "gunicorn default (1 sync worker)", (), "default"),
        gunicorn(b.plain, "gunicorn 2 sync", ("--workers", "2")),
        gunicorn(b.plain, "gunicorn gthread 2x4", ("--workers", "2", "--threads", "4")),
        mod_wsgi(b.warp, b.tools.work, "mod_wsgi embedded 2x1", 2, 1, embedded=True),
        mod_wsgi(b.warp, b.tools.work, "mod_wsgi embedded 2x200", 2, 200, embedded=True),
    ]
    rounds = max(1, min(2, st.load_rounds))
    median_ms, answered = Samples(), Samples()
    for _, order in rotations(configs, rounds):
        for config in order:
            port = b.next_port()
            server, _ = start(config, port, b.logs)
            try:
                result = http.with_slow_clients(port, slow=st.slow_clients, asked=st.slow_asked, timeout=2.0)
            finally:
                server.stop()
            median_ms.add(config.name, result.median_ms)
            answered.add(config.name, result.answered)
            b.slow[config.name] = (
                median_ms.median(config.name),
                sum(int(v or 0) for v in answered.values[config.name]),
                st.slow_asked * len(answered.values[config.name]),
            )
            b.note(
                f"  {config.name}: {result.answered}/{result.asked} answered, median "
                f"{'-' if result.median_ms is None else f'{result.median_ms:.1f} ms'}, {result.held} slow held"
            )
    rows = []
    for config in configs:
        value = median_ms.median(config.name)
        got = sum(int(v or 0) for v in answered.values.get(config.name, []))
        rows.append([config.name, "-" if value is None else f"{value:.1f} ms", f"{got}/{st.slow_asked * rounds}"])
    s.table(["configuration", "normal request, median", "answered 200 within 2 s"], rows)
    auto = median_ms.median(configs[0].name)
    all_answered = sum(int(v or 0) for v in answered.values.get(configs[0].name, [])) == st.slow_asked * rounds
    s.targets.append(
        Target(
            f"automatic configuration answers in under 50 ms (median) with {st.slow_clients} slow clients",
            auto is not None and auto < 50 and all_answered,
            f"median {'-' if auto is None else f'{auto:.1f} ms'}, all answered: {all_answered}",
        )
    )
    s.load_after = load()
    return s


def explain(b: Bench) -> None:
    """What limits the throughput target, from this run's own figures."""
    best = b.facts.get("best_tuned")
    if not best:
        return
    text = (
        f"The best hand-tuned mod_wsgi setting here was {best}. warp start runs mod_wsgi in daemon mode: every request "
        "crosses from an Apache worker to the daemon process over a socket, which costs CPU on a 2-core machine; "
        "embedded mode runs the app inside Apache's own workers. But in embedded mode Apache's capacity is exactly "
        "processes x threads (mod_wsgi-express ignores --max-clients there), so a few threads per process means a "
        "few slow clients block the server, and --reload-on-changes needs daemon mode."
    )
    auto = b.rps.get("warp start (automatic)")
    daemon = {name: value for name, value in b.rps.items() if name.startswith("mod_wsgi daemon") and value}
    if auto and daemon:
        top = max(daemon, key=lambda k: daemon[k] or 0)
        text += (
            f" Among daemon-mode settings the best was {top} ({daemon[top] or 0:.0f} req/s); the automatic choice "
            f"({b.facts.get('auto_workers', '?')}) made {auto:.0f}, {auto / (daemon[top] or 1):.2f}x of it"
        )
        if auto < 0.95 * (daemon[top] or 0):
            text += (
                ": this view never waits on I/O, so a second thread per process only contends for the GIL; "
                "warptasks gives each process 2 threads to overlap waits on a database or other services, which "
                "real views have."
            )
        else:
            text += ", so within daemon mode the choice is as good as hand-tuning: the gap is daemon mode itself."
    survivors = [
        name for name, (ms, got, asked) in b.slow.items() if "embedded" in name and ms is not None and ms < 50 and got == asked
    ]
    if survivors:
        figures = ", ".join(f"{name} {b.rps.get(name) or 0:.0f} req/s" for name in survivors if b.rps.get(name))
        text += (
            f" Embedded settings that also kept a normal request under 50 ms with slow clients: {', '.join(survivors)}"
            + (f" ({figures})" if figures else "")
            + ": they need hundreds of threads per process, which the "
            "processes x threads that warptasks derives from the CPUs (and its tests pin) do not give."
        )
    b.why[WITHIN_10] = text
    reference = b.rps.get("warpdrive start (default: daemon 1x5)")
    if auto and reference:
        best_daemon = max(daemon.values()) if daemon else None
        b.why[AT_LEAST_17] = (
            "The gain over warpdrive's default (1 daemon process) comes from running one process per CPU, so on 2 cores it "
            f"is bounded by 2x, and less while other work uses the CPUs (load average during the section: "
            f"{b.facts.get('throughput_load', '?')}, on {os.cpu_count()} CPUs). "
            + (
                f"The best daemon-mode setting reached {best_daemon / reference:.2f}x warpdrive's default in the same run. "
                if best_daemon
                else ""
            )
            + "Embedded mode avoids the daemon hop; see the throughput section for what it costs."
        )


SECTIONS = {
    "build": [empty_cache_builds, cold_builds],
    "rebuild": [rebuilds],
    "start": [start_stop],
    "startup": [startup],
    "throughput": [throughput],
    "static": [static_files],
    "slow": [slow_clients],
}


def prepare_builds(b: Bench) -> None:
    """Sections after the builds need every side built once."""
    for side in b.sides:
        if not _built(side):
            b.note(f"building {side.name} once (not measured)")
            side.cold_build()


__all__ = ["Bench", "FULL", "QUICK", "SECTIONS", "prepare_builds", "median"]
