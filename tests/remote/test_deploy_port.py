"""warp deploy of a project whose .s2i/environment sets PORT (the S2I builder's different-port apps), from a shell that
exports PORT and DJANGO_SETTINGS_MODULE too: the deploy's own backend port wins on the host, and nothing of the
deploying shell's environment reaches the release."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.harness.engine import ensure_engine
from tests.harness.hosts import remove_hosts, ssh_hosts
from warptasks.remote.deploy import deploy
from warptasks.remote.fleet import summary
from warptasks.remote.hosts import HostTarget
from warptasks.settings import DeploySettings

from .deploy_helpers import get
from .test_deploy import free_port_run

pytestmark = pytest.mark.remote

PATH = "/srv/port-site"

# The app's own server (app.py, as S2I runs it): it listens where PORT says, which must be the deploy's backend port.
APP = """import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Show(BaseHTTPRequestHandler):
    def do_GET(self):
        names = ("PORT", "DJANGO_SETTINGS_MODULE")
        body = json.dumps({name: os.environ.get(name) for name in names}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Show).serve_forever()
"""


def test_a_projects_port_never_moves_a_deploys_backend_port(monkeypatch: pytest.MonkeyPatch) -> None:
    client = ensure_engine()
    [host] = ssh_hosts(client, 1, network="host")
    workdir = Path(tempfile.mkdtemp(prefix="warp-deploy-port-", dir=os.environ.get("WARP_TEST_ROOT", "/tmp")))
    os.chmod(workdir, 0o755)
    try:
        project = workdir / "site"
        (project / ".s2i").mkdir(parents=True)
        (project / "app.py").write_text(APP)
        project_port = free_port_run(1)
        (project / ".s2i" / "environment").write_text(f"PORT={project_port}\n")
        for path in [project, *project.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        monkeypatch.setenv("PORT", str(free_port_run(1)))  # the deploying shell's: never the host's
        monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "deployer.shell")
        port = free_port_run()
        opts = DeploySettings.resolve(None, path=PATH, identity=host.key_filename, known_hosts=host.known_hosts, drain=1)
        target = HostTarget(host.address, host.user, host.port, app_port=port, listen="127.0.0.1")
        results = deploy([target], str(project), opts, say=print)
        assert all(r.ok for r in results), summary(results)
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200, body
        seen = json.loads(body)
        assert seen["PORT"] in (str(port + 1), str(port + 2)), seen  # a backend port of the pair, not the project's
        assert seen["DJANGO_SETTINGS_MODULE"] is None, seen
    finally:
        remove_hosts([host])
        if os.environ.get("WARP_TEST_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
