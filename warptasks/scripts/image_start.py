"""``warp`` in an application image's runtime stage: start the app as ``warp start`` would, with no warptasks.

Standard library only, run with ``python3 -I``. The start plan was rendered to data in the image's build stage
(:mod:`warptasks.image.runtime`, the file ``.warp/image-start.json``); this script sizes the workers from this
container's own CPU and memory limits with the same functions ``warp start`` uses (``resources.py``, shipped
beside this file and loaded by path, fed by ``probe.py``'s reading of the cgroup files), takes the server step
planned for that size, fills in ``$PORT`` and execs the server, so the server itself gets docker's stop signal
(dumb-init, PID 1, passes it on).

    warp start [TYPE]   the web server, or the Procfile's process type TYPE (worker, clock...)
    warp health         exit 0 when the app is healthy: its ready (else alive) hook, else an HTTP GET of the port
    warp health HOOK    exit 0 when the app's ready or alive hook, alone, succeeds (Kubernetes' readiness/liveness)
    warp migrate        the app's migrate step (its hook, or Django's migrate), then the Procfile's release: line:
                        a Kubernetes Job runs it once per image

``warp start`` takes, and checks, the options the S2I ``run`` script passes (``--host``/``--listen`` 0.0.0.0,
``--port``, ``--project``); any other command or option is refused with what to do instead.
"""

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = "/opt/app-root/src"
DATA = os.path.join(PROJECT, ".warp", "image-start.json")
HEALTH_TIMEOUT = 6  # below the HEALTHCHECK's own timeout


class Refused(Exception):
    pass


def _load(name):
    """A shipped module by path (no package: this image has no warptasks)."""
    spec = importlib.util.spec_from_file_location("warp_image_" + name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


class _Namespace:
    def __init__(self, **values):
        self.__dict__.update(values)


def _facts(raw):
    """probe.py's raw resources as the attributes resources.available_resources reads (Facts' own names)."""
    cgroup = raw.get("cgroup") or {}
    v2, v1 = cgroup.get("v2") or {}, cgroup.get("v1") or {}
    return _Namespace(
        cpu_count=raw.get("cpu_count"),
        affinity=raw.get("affinity"),
        memtotal=raw.get("memtotal"),
        cgroup=_Namespace(
            cpu_max=tuple(v2.get("cpu.max", ())),
            memory_max=tuple(v2.get("memory.max", ())),
            cfs=tuple(tuple(pair) for pair in v1.get("cpu", ())),
            limit_in_bytes=tuple(v1.get("limit_in_bytes", ())),
        ),
    )


def _read_data():
    try:
        with open(DATA, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise Refused("cannot read the start data %s: %s (was this image built by warp s2i?)" % (DATA, exc.strerror)) from None


def _port(data):
    text = os.environ.get("PORT", "").strip() or str(data["fixed_port"])
    # "٣٠٠٠".isdigit() is True; and int() of over 4300 digits raises: the length is checked first.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise Refused("PORT=%r is not a port number (1-65535)" % text)
    if data["port"] is None and text != str(data["fixed_port"]):
        raise Refused("this image's server listens on port %s only; unset PORT or set it to that" % data["fixed_port"])
    return text


def _filled(step, data, port):
    """``step`` with the port at the places the build stage found it (``port_at``), never by the token's value: an
    environment value that happens to equal the token is left as it is."""
    places = step.get("port_at")
    if data["port"] is None or not places:
        return step
    width = len(data["port"])
    step = json.loads(json.dumps(step))  # a copy: the data's step stays the template
    del step["port_at"]
    for path, offsets in places:
        holder = step
        for key in path[:-1]:
            holder = holder[key]
        value = holder[path[-1]]
        for at in sorted(offsets, reverse=True):
            value = value[:at] + port + value[at + width :]
        holder[path[-1]] = value
    return step


def _environment(step, data):
    """The container's environment, the step's over it; but a variable of the project's environment file that the
    container sets (a Kubernetes Secret or ConfigMap, ``docker run -e``) keeps the container's value, as on a host
    its environment file's value wins over the project's."""
    env = dict(os.environ)
    pod = {name: env[name] for name in data.get("project_env", ()) if name in env}
    env.update(step["env"])
    env.update(pod)
    if step["path"]:
        env["PATH"] = os.pathsep.join(step["path"] + [env.get("PATH", os.defpath)])
    return env


def sized_server(data, raw):
    """The server step planned for the processes and threads this container's limits allow, and the notes saying so."""
    resources = _load("resources")
    server = _Namespace(capacity=_Namespace(**data["capacity"]))
    available = resources.available_resources(_facts(raw))
    wanted = resources.worker_capacity(available, server)
    chosen, cpus = None, None
    for key in sorted(data["by_cpus"], key=int):
        planned = resources.worker_capacity(resources.Resources(float(key), None, ""), server)
        if (planned.processes, planned.threads) == (wanted.processes, wanted.threads):
            chosen, cpus = data["by_cpus"][key], key
            break
    notes = ["resources: %s" % available.why]
    if chosen is None:  # more than the image planned for: the largest it did
        cpus = max(data["by_cpus"], key=int)
        chosen = data["by_cpus"][cpus]
        notes.append("workers: sized for %s CPUs, the most this image planned for" % cpus)
    else:
        notes.append("workers: %d process(es) x %d thread(s) (%s)" % (wanted.processes, wanted.threads, wanted.why))
    fixed = len(data["servers"]) == 1 and any("set in the environment file" in note for note in data["notes"])
    if fixed:
        notes = notes[:1] + [note for note in data["notes"] if note.startswith("workers:")]
    return data["servers"][chosen], notes


def _run_before(steps, data, port):
    for step in steps:
        step = _filled(step, data, port)
        print("%s: %s" % (step["name"], step["why"]), flush=True)
        done = subprocess.run(step["argv"], cwd=step["cwd"], env=_environment(step, data), check=False)
        if done.returncode != 0:
            raise Refused("step '%s' failed (exit %d): %s" % (step["name"], done.returncode, step["why"]))


def _exec(step, data):
    env = _environment(step, data)
    os.chdir(step["cwd"])
    sys.stdout.flush()
    try:
        os.execvpe(step["argv"][0], step["argv"], env)
    except OSError as exc:
        raise Refused("cannot start %s: %s" % (step["argv"][0], exc.strerror)) from None


def _start_arguments(args):
    """The process type named, if any; the S2I run script's options checked against what the image was built for."""
    kind = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, sep, value = arg.partition("=")
        if name in ("--host", "--listen", "--port", "--project"):
            if not sep:
                if not rest:
                    raise Refused("%s needs a value" % name)
                value = rest.pop(0)
            if name in ("--host", "--listen") and value not in ("0.0.0.0", "::"):
                raise Refused("this image's server listens on every address (0.0.0.0); %s %s is not possible" % (name, value))
            if name == "--port" and value != os.environ.get("PORT", value):
                raise Refused("--port %s differs from PORT=%s; set one of them" % (value, os.environ["PORT"]))
            if name == "--port":
                os.environ["PORT"] = value
            if name == "--project" and os.path.realpath(value) != PROJECT:
                raise Refused("this image's app is in %s, not %s" % (PROJECT, value))
        elif name == "--process":  # inv warp.start --process TYPE's spelling of ``warp start TYPE``
            if not sep:
                if not rest:
                    raise Refused("--process needs a process type")
                value = rest.pop(0)
            if kind is not None:
                raise Refused("warp start takes one process type at most, not %r too" % value)
            kind = value
        elif arg.startswith("-"):
            raise Refused(
                "warp start in this image takes no %s: workers are sized from the container's limits" % name,
                "set WEB_CONCURRENCY / MOD_WSGI_THREADS in the app's environment file and rebuild, "
                "or give the container CPU and memory limits (docker run --cpus, --memory)",
            )
        elif kind is None:
            kind = arg
        else:
            raise Refused("warp start takes one process type at most, not %r too" % arg)
    return kind


def start(args):
    kind = _start_arguments(args)
    data = _read_data()
    port = _port(data)
    if kind not in (None, "web"):
        step = data["processes"].get(kind)
        if step is None:
            types = ", ".join(sorted(data["processes"])) or "none"
            raise Refused(
                "the Procfile has no process type %r" % kind,
                "its process types: %s; add a '%s: command' line to the Procfile and rebuild the image" % (types, kind),
            )
        step = _filled(step, data, port)
        print("start: %s" % step["why"], flush=True)
        _exec(step, data)
    probe = _load("probe")
    step, sizing = sized_server(data, probe.resources())
    for note in [n for n in data["notes"] if not n.startswith(("resources:", "workers:"))] + sizing:
        print(note, flush=True)
    _run_before(data["before"], data, port)
    step = _filled(step, data, port)
    print("start: %s" % step["why"], flush=True)
    _exec(step, data)


def _hook(data, name):
    """The hook ``name`` as the image planned it; refused when the app (or an image older than hooks data) has none."""
    step = (data.get("hooks") or {}).get(name)
    if step is None:
        raise Refused(
            "this image has no %s step" % name,
            "add .s2i/action_hooks/%s to the app (Django apps migrate without one) and rebuild the image with warp s2i" % name,
        )
    return step


def migrate(args):
    """The migrate step, then the Procfile's release: line, as a deploy runs them once; refused when there is neither."""
    if args:
        raise Refused("warp migrate takes no arguments here, not %r" % args[0])
    data = _read_data()
    port = _port(data)
    hooks = data.get("hooks") or {}
    steps = [hooks[name] for name in ("migrate", "release") if hooks.get(name)] or [_hook(data, "migrate")]
    for step in steps[:-1]:
        _run_before([step], data, port)
    step = _filled(steps[-1], data, port)
    print("%s: %s" % (step["name"], step["why"]), flush=True)
    _exec(step, data)


def health(args):
    """Exit 0 when healthy. The app's hook decides when it has one (or the one named); else any HTTP answer below 500."""
    if len(args) > 1 or (args and args[0] not in ("ready", "alive")):
        raise Refused("warp health takes ready or alive, or nothing, not %r" % " ".join(args))
    data = _read_data()
    port = _port(data)
    check = _hook(data, args[0]) if args else data["health"]
    if check:
        step = _filled(check, data, port)
        try:
            env = _environment(step, data)
            done = subprocess.run(step["argv"], cwd=step["cwd"], env=env, timeout=HEALTH_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            print("unhealthy: %s took over %d s" % (step["why"], HEALTH_TIMEOUT))
            return 1
        if done.returncode != 0:
            print("unhealthy: %s exited with %d" % (step["why"], done.returncode))
            return 1
        return 0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
    url = "http://127.0.0.1:%s/" % port
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (OSError, ValueError) as exc:
        print("unhealthy: GET %s: %s" % (url, getattr(exc, "reason", exc)))
        return 1
    if status >= 500:
        print("unhealthy: GET %s answered %d" % (url, status))
        return 1
    return 0


def main(argv):
    command, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    try:
        if command == "start":
            start(args)
        elif command == "health":
            return health(args)
        elif command == "migrate":
            migrate(args)
        else:
            raise Refused(
                "this image's warp only starts the app (warp start [process type], health, migrate); %r is not here"
                % (command or "(nothing)"),
                "run warp build, plan, exec and the rest where warptasks is installed, or with the builder image (warp builder)",
            )
    except Refused as refused:
        message = refused.args[0]
        hint = refused.args[1] if len(refused.args) > 1 else ""
        sys.stderr.write("warp: %s\n%s" % (message, "hint: %s\n" % hint if hint else ""))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
