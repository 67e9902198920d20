"""What a client under keep-alive load sees when the front switches an app to a new backend, two ways.

- ``file``: the way warptasks switches. The route's upstream is
  ``{file.<home>/upstreams/<app>}``, read by Caddy for each request; the switch
  rewrites that file. Caddy's config does not change.
- ``admin``: the upstream's ``dial`` changed through the admin API
  (``PATCH /id/<app>/handle/0/upstreams/0/dial``). Any change reloads the whole
  config: requests in flight finish (grace_period), but the old config's idle
  keep-alive client connections are closed, and a client that sends its next
  request on one at that moment gets an error.

Each trial: 4 keep-alive loops and 2 new-connection loops (``http.client``) on
127.0.0.1 for 4 s, a 3 s request started before the switch, the switch at 2 s.
Run: ``python -m bench.front_switch [TRIALS]`` from the project's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from tests.integration.front_helpers import backend, caddy_venv_once, free_port, load_across, running_front
from warptasks.remote import front
from warptasks.scripts import front as script


def trials(count: int) -> dict[str, list[tuple[int, int]]]:
    results: dict[str, list[tuple[int, int]]] = {"file": [], "admin": []}
    with TemporaryDirectory() as tmp, running_front(caddy_venv_once(), http_port=free_port(), https_port=free_port()) as f:
        with backend("A", Path(tmp)) as a, backend("B", Path(tmp)) as b:
            app, port = front.app_id("/srv/bench"), free_port()
            f.site(front.Site(app, port=port), backend=a)
            dial = f"/id/{app}/handle/0/upstreams/0/dial"
            placeholder = "{file." + f.host.upstream_file(app) + "}"
            for _ in range(count):
                for how in ("file", "admin"):
                    f.switch(app, a)
                    status, _, _ = script._admin(f.host.home, "PATCH", dial, placeholder if how == "file" else a)
                    assert status == 200
                    if how == "file":
                        load = load_across(port, lambda: f.switch(app, b), seconds=4)
                    else:
                        load = load_across(port, lambda: script._admin(f.host.home, "PATCH", dial, b), seconds=4)
                    assert load.slow.served == {"A": 1}, load.slow.errors
                    results[how].append((load.failed, load.total))
                    print(f"{how:5}: {load.failed} failed of {load.total} {load.errors()[:2]}", flush=True)
            script._admin(f.host.home, "PATCH", dial, placeholder)
    return results


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = trials(count)
    for how, runs in results.items():
        failed, total = sum(r[0] for r in runs), sum(r[1] for r in runs)
        print(f"{how}: {failed} failed of {total} requests in {len(runs)} switches ({[r[0] for r in runs]})")


if __name__ == "__main__":
    main()
