"""What goes into an image: context files, the dependency/app split, the Dockerfile and the phase scripts."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.cases import PROBE_FACTS, WSGI, Exe, django_tree, facts, write_tree
from warptasks.detect import AppSpec, detect_app
from warptasks.errors import ConfigError, StepFailed
from warptasks.image import dockerfile as img
from warptasks.image.context import build_context, moved_under
from warptasks.image.engine import build_failure
from warptasks.image.wheel import warptasks_wheel
from warptasks.plan import BuildOptions, command_line, plan_build

IMAGE_FACTS = facts(uv="/opt/warptasks/bin/uv", euid=1001, home=img.PROJECT, cache_home=f"{img.PROJECT}/.cache")


def detect(root: Path, files: dict[str, Any]) -> AppSpec:
    return detect_app(write_tree(root, files))


def image_build(**overrides: Any) -> img.ImageBuild:
    values: dict[str, Any] = {
        "base_image": "python:3.11-slim",
        "system_packages": (),
        "python": "/usr/local/bin/python3.11",
        "wheel": "warptasks-0.1.0-py3-none-any.whl",
        "labels": {"io.openshift.s2i.scripts-url": img.SCRIPTS_URL},
    }
    values.update(overrides)
    return img.ImageBuild(**values)


@pytest.mark.parametrize(
    ("name", "repository", "tag"),
    [
        ("site", "site", "latest"),
        ("warp-mysite:1.0", "warp-mysite", "1.0"),
        ("registry.example.com:5000/team/site:v2_rc.1", "registry.example.com:5000/team/site", "v2_rc.1"),
        ("localhost/a__b/c-d", "localhost/a__b/c-d", "latest"),
    ],
)
def test_valid_image_names_split_into_repository_and_tag(name: str, repository: str, tag: str) -> None:
    parsed = img.parse_image_name(name)
    assert (parsed.repository, parsed.tag) == (repository, tag)


@pytest.mark.parametrize("name", ["", "Site", "site:", "site:-x", "a//b", "-site", "site:" + "x" * 129, "my site", "site@sha"])
def test_invalid_image_names_are_refused_with_a_hint(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid image name") as raised:
        img.parse_image_name(name)
    assert "lowercase" in raised.value.hint


def test_default_image_name_comes_from_the_project_folder(project_dir: Path) -> None:
    root = project_dir / "My Site_2"
    root.mkdir()
    spec = detect(root, {"wsgi.py": WSGI})
    assert img.default_image_name(spec) == "warp-my-site-2:latest"
    img.parse_image_name(img.default_image_name(spec))


def test_default_base_image_follows_the_projects_python(tmp_path: Path) -> None:
    spec = detect(tmp_path, {"wsgi.py": WSGI, ".python-version": "3.12.4\n"})
    assert img.default_base_image(spec, "3.11")[0] == "python:3.12-slim"
    plain = detect(tmp_path / "b", {"wsgi.py": WSGI})
    assert img.default_base_image(plain, "3.11")[0] == "python:3.11-slim"


def test_context_never_holds_vcs_data_environments_or_secrets(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "wsgi.py": WSGI,
            "requirements.txt": "flask\n",
            "static/site.css": "body{}",
            ".git/config": "x",
            ".warp/state.json": "{}",
            ".env": "SECRET=1",
            ".env.production": "SECRET=2",
            "sub/.env": "SECRET=3",
            ".venv/bin/python": "",
            "__pycache__/wsgi.cpython-311.pyc": "",
            "deploy/id_rsa": "key",
            "tls/site.pem": "cert",
            ".s2i/environment": "APP_MODULE=wsgi\n",
        },
    )
    assert img.context_files(tmp_path) == [".s2i/environment", "requirements.txt", "static/site.css", "wsgi.py"]


def test_dockerignore_and_s2iignore_are_honoured_relative_to_the_root(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "wsgi.py": WSGI,
            "docs/index.md": "",
            "docs/keep.md": "",
            "notes.txt": "",
            "sub/notes.txt": "",
            "data/big.bin": "",
            "lib/data/small.bin": "",
            ".dockerignore": "# comment\ndocs\n!docs/keep.md\n/notes.txt\n",
            ".s2iignore": "**/*.bin\n",
        },
    )
    assert img.context_files(tmp_path) == ["docs/keep.md", "sub/notes.txt", "wsgi.py"]


def test_dependency_files_hooks_and_environment_files_come_first(tmp_path: Path) -> None:
    spec = detect(
        tmp_path,
        {
            "wsgi.py": WSGI,
            "requirements.txt": "-r base.txt\n",
            "base.txt": "flask\n",
            "views.py": "",
            ".s2i/environment": "WARP_SERVER=gunicorn\n",
            ".s2i/action_hooks/build": Exe(),
        },
    )
    first, rest = img.split_context(spec, img.context_files(tmp_path))
    assert first == [".s2i/action_hooks/build", ".s2i/environment", "base.txt", "requirements.txt"]
    assert rest == ["views.py", "wsgi.py"]


def test_dependency_files_are_found_under_app_home(tmp_path: Path) -> None:
    spec = detect(tmp_path, {".s2i/environment": "APP_HOME=web\n", "web/wsgi.py": WSGI, "web/requirements.txt": "flask\n"})
    first, rest = img.split_context(spec, img.context_files(tmp_path))
    assert first == [".s2i/environment", "web/requirements.txt"]
    assert rest == ["web/wsgi.py"]


def test_a_project_installed_as_a_package_keeps_its_code_out_of_the_dependency_layer(tmp_path: Path) -> None:
    """The project itself is installed by the app phase, after its code: the dependency layer needs setup.py alone
    (its install_requires decide the environment), and the runtime takes the environment from the build stage."""
    spec = detect(tmp_path, {"wsgi.py": WSGI, "setup.py": "from setuptools import setup\nsetup()\n", "pkg/__init__.py": ""})
    first, rest = img.split_context(spec, img.context_files(tmp_path))
    assert (first, rest) == (["setup.py"], ["pkg/__init__.py", "wsgi.py"])
    assert img.env_stage(spec) == "build"


def test_an_ignored_dependency_file_is_an_error(tmp_path: Path) -> None:
    spec = detect(tmp_path, {"wsgi.py": WSGI, "requirements.txt": "flask\n", ".dockerignore": "*.txt\n"})
    with pytest.raises(ConfigError, match="requirements.txt"):
        img.split_context(spec, img.context_files(tmp_path))


@pytest.mark.parametrize(
    ("server", "target", "manager", "expected"),
    [
        ("mod_wsgi", {"apxs": None, "cc": None}, "apt-get", ("apache2", "apache2-dev", "gcc", "libc6-dev", "python3-dev")),
        (
            "mod_wsgi",
            {"apxs": None, "cc": None, "python": {"prefix": "/usr/local"}},
            "apt-get",
            ("apache2", "apache2-dev", "gcc", "libc6-dev"),
        ),
        ("mod_wsgi", {"apxs": "/usr/bin/apxs", "cc": "/usr/bin/cc"}, "apt-get", ()),
        ("mod_wsgi", {"apxs": "/usr/bin/apxs", "cc": "/usr/bin/cc"}, None, ()),
        ("uwsgi", {"cc": None}, "apt-get", ("gcc", "libc6-dev", "python3-dev")),
        ("gunicorn", {"apxs": None, "cc": None}, None, ()),
    ],
)
def test_system_packages_are_added_only_when_the_base_image_lacks_them(
    server: str, target: dict[str, Any], manager: str | None, expected: tuple[str, ...]
) -> None:
    data = facts(**{**target, "python": {**PROBE_FACTS["python"], **target.get("python", {})}})
    packages, why = img.system_packages(server, data, manager)
    assert packages == expected
    assert why


def test_mod_wsgi_on_a_base_without_apt_and_without_apxs_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="apxs") as raised:
        img.system_packages("mod_wsgi", facts(apxs=None, cc=None), None)
    assert "--server gunicorn" in raised.value.hint


def test_phase_scripts_run_the_plans_own_command_lines(tmp_path: Path) -> None:
    spec = detect(tmp_path, {"wsgi.py": WSGI, "requirements.txt": "flask\n", "static/site.css": ""})
    plan = plan_build(spec, IMAGE_FACTS, BuildOptions(project=img.PROJECT))
    deps, app = img.phase_script(plan, "deps"), img.phase_script(plan, "app")
    for step in plan.runnable:
        assert f"( {command_line(step)} )" in (deps if step.phase == "deps" else app)
        assert f"( {command_line(step)} )" not in (app if step.phase == "deps" else deps)
    markers = [line for line in deps.splitlines() if line.startswith("echo ")]
    assert len(markers) == len(plan.phase("deps").runnable)
    assert img.STEP_MARKER.match("[deps 1/5] virtualenv: a new environment")


def test_a_code_only_change_leaves_the_dependency_script_unchanged(tmp_path: Path) -> None:
    files = {"wsgi.py": WSGI, "requirements.txt": "flask\n"}
    before = plan_build(detect(tmp_path, files), IMAGE_FACTS, BuildOptions(project=img.PROJECT))
    time.sleep(0.01)
    (tmp_path / "views.py").write_text("changed = True\n")
    changed_code = detect(tmp_path, files | {"wsgi.py": WSGI + "# changed\n"})
    after = plan_build(changed_code, IMAGE_FACTS, BuildOptions(project=img.PROJECT))
    assert img.phase_script(before, "deps") == img.phase_script(after, "deps")
    (tmp_path / "requirements.txt").write_text("flask\nrequests\n")
    changed = plan_build(detect_app(tmp_path), IMAGE_FACTS, BuildOptions(project=img.PROJECT))
    assert img.phase_script(changed, "deps") != img.phase_script(before, "deps")


def test_app_dockerfile_copies_dependency_files_before_installing_and_code_after() -> None:
    text = img.app_dockerfile(image_build(system_packages=("apache2", "apache2-dev"), build_args=("PIP_INDEX_URL",)))
    lines = text.splitlines()
    order = [
        "FROM python:3.11-slim AS deps",
        "ARG PIP_INDEX_URL",
        "USER root",
        "apache2-dev",
        f"-m venv {img.WARP_HOME}",
        f"USER {img.USER_ID}",
        f"COPY --chown={img.USER_ID}:0 deps/ {img.PROJECT}/",
        "build/deps.sh\n",
        "FROM deps AS bytecode",
        "FROM bytecode AS build",
        "COPY warp/build/app.sh warp/build/runtime.sh",  # before the code: cached after a code-only change
        f"COPY --chown={img.USER_ID}:0 src/ {img.PROJECT}/",
        "build/app.sh && sh",
        "\nFROM python:3.11-slim\n",
        f'CMD ["{img.S2I_SCRIPTS}/run"]',
        f"COPY --from=deps --chown={img.USER_ID}:0 {img.ENVS}/ {img.ENVS}/",
        f"COPY --from=build --chown={img.USER_ID}:0 {img.PROJECT}/ {img.PROJECT}/",  # the project as built: one copy
        "LABEL ",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert f"EXPOSE {img.PORT}" in lines
    assert f'ENTRYPOINT ["{img.WARP_HOME}/bin/dumb-init", "--"]' in lines
    assert lines[-1].startswith("LABEL ") and f'io.openshift.s2i.scripts-url="{img.SCRIPTS_URL}"' in lines[-1]


def test_the_runtime_stage_has_no_compiler_no_warptasks_and_stops_with_the_servers_signal() -> None:
    build = image_build(
        system_packages=("apache2", "apache2-dev", "gcc"), runtime_packages=("apache2-bin",), stop_signal="SIGWINCH"
    )
    runtime = img.app_dockerfile(build).split("\nFROM python:3.11-slim\n", 1)[1]
    assert "apache2-bin" in runtime and "apache2-dev" not in runtime and "gcc" not in runtime
    assert "warp-wheel" not in runtime and "pip install" not in runtime
    assert "STOPSIGNAL SIGWINCH" in runtime.splitlines()
    health = next(line for line in runtime.splitlines() if line.startswith("HEALTHCHECK "))
    assert health.endswith('CMD ["/usr/local/bin/python3.11", "-I", "/opt/warptasks/lib/image_start.py", "health"]')
    # The environment is copied before the code, so a code-only change reuses its layer.
    assert runtime.index("--from=deps --chown=1001:0 /opt/app-root/envs/") < runtime.index("--from=build")


def test_runtime_packages_are_what_the_server_loads_never_its_compiler() -> None:
    lacking = facts(apxs=None, cc=None)  # Debian's own Python (prefix /usr): mod_wsgi links its shared libpython
    assert img.runtime_packages("mod_wsgi", lacking, "apt-get") == ("apache2-bin", "media-types", "libpython3.11")
    official = facts(apxs=None, cc=None, python={**PROBE_FACTS["python"], "prefix": "/usr/local"})
    assert img.runtime_packages("mod_wsgi", official, "apt-get") == ("apache2-bin", "media-types")
    assert img.runtime_packages("gunicorn", lacking, "apt-get") == ()
    assert img.runtime_packages("mod_wsgi", facts(apxs="/usr/bin/apxs", cc="/usr/bin/cc"), "apt-get") == ()


def test_a_base_with_what_the_server_needs_gets_no_apt_get() -> None:
    assert "apt-get" not in img.app_dockerfile(image_build())


def test_builder_dockerfile_has_the_scripts_and_prints_usage_by_default() -> None:
    text = img.builder_dockerfile(image_build(builder=True))
    assert f"COPY warp/s2i/ {img.S2I_SCRIPTS}/" in text
    assert text.rstrip().endswith(f'CMD ["{img.S2I_SCRIPTS}/usage"]')
    assert "deps.sh" not in text


def test_labels_say_what_s2i_and_openshift_read_and_the_commit(tmp_path: Path) -> None:
    spec = detect(tmp_path, django_tree("STATIC_URL = '/static/'\n"))
    labels = img.image_labels(spec, "mod_wsgi", "a" * 40, builder=False)
    assert labels["io.openshift.s2i.scripts-url"] == "image:///usr/libexec/s2i"
    assert labels["io.openshift.expose-services"] == "8080:http"
    assert labels["io.k8s.display-name"] == tmp_path.name
    assert "mod_wsgi" in labels["io.k8s.description"]
    assert labels["org.opencontainers.image.revision"] == "a" * 40
    assert "org.opencontainers.image.revision" not in img.image_labels(spec, "mod_wsgi", None, builder=True)


def test_the_warptasks_wheel_is_the_same_bytes_every_time_and_carries_the_s2i_scripts() -> None:
    name, first = warptasks_wheel()
    assert name.startswith("warptasks-") and name.endswith("-py3-none-any.whl")
    assert warptasks_wheel()[1] == first
    with zipfile.ZipFile(io.BytesIO(first)) as wheel:
        names = wheel.namelist()
        assert {"warptasks/scripts/probe.py", "warptasks/scripts/s2i/assemble", "warptasks/scripts/s2i/run"} <= set(names)
        info = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert info and "warp = warptasks.cli:main" in wheel.read(info[0]).decode()
        assert not [n for n in names if n.endswith(".pyc")]
    assert os.path.isfile(Path(img.__file__).parent.parent / "scripts" / "s2i" / "save-artifacts")


@pytest.mark.parametrize(
    ("files", "target", "decided_by"),
    [
        (
            {"gunicorn.conf.py": "bind = '0.0.0.0:8080'\nwsgi_app = 'site.web:app'\n", "site/web.py": ""},
            "site.web:app",
            "wsgi_app in gunicorn.conf.py",
        ),
        (
            {".s2i/environment": "APP_CONFIG=conf/gunicorn.py\n", "conf/gunicorn.py": "wsgi_app = 'hello'\n", "wsgi.py": WSGI},
            "hello:application",
            "wsgi_app in conf/gunicorn.py",
        ),
        ({"gunicorn.conf.py": "workers = 2\n", "wsgi.py": WSGI}, "wsgi:application", "wsgi.py exists"),
    ],
)
def test_a_gunicorn_config_naming_wsgi_app_decides_the_entry_as_for_the_s2i_builder(
    tmp_path: Path, files: dict[str, Any], target: str, decided_by: str
) -> None:
    spec = detect(tmp_path, files)
    assert (spec.kind, spec.target) == ("wsgi", target)
    assert spec.why.startswith(decided_by)


def test_the_build_context_has_fixed_times_and_owners_and_group_writable_files(tmp_path: Path) -> None:
    write_tree(tmp_path, {"wsgi.py": WSGI, "requirements.txt": "six\n", "bin/run": Exe()})
    spec = detect_app(tmp_path)
    first, rest = img.split_context(spec, img.context_files(tmp_path))
    build = image_build()
    context = build_context(
        img.app_dockerfile(build),
        build,
        b"wheel",
        {"/etc/ssl/certs/ca.pem": b"CA"},
        (tmp_path, first, rest),
        {"deps.sh": "true\n", "app.sh": "true\n"},
    )
    with tarfile.open(fileobj=context) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert archive.extractfile("Dockerfile").read().decode() == img.app_dockerfile(build)  # type: ignore[union-attr]
    assert {
        "deps/requirements.txt",
        "src/wsgi.py",
        "src/bin/run",
        "warp/build/deps.sh",
        "warp/files/etc/ssl/certs/ca.pem",
        f"warp/{build.wheel}",
        "warp/s2i/assemble",
    } <= set(members)
    assert "src/requirements.txt" not in members and "deps/wsgi.py" not in members
    assert {(m.mtime, m.uid, m.gid) for m in members.values()} == {(0, img.USER_ID, 0)}
    assert members["src/wsgi.py"].mode == 0o664 and members["src/bin/run"].mode == 0o775
    assert members["warp/s2i/run"].mode == 0o755


def test_saved_artifacts_are_moved_under_the_folder_assemble_restores_from() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in (".warp", ".warp/envs"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        data = tarfile.TarInfo(".warp/envs/a")
        data.size = 2
        archive.addfile(data, io.BytesIO(b"ok"))
        link = tarfile.TarInfo(".warp/envs/b")
        link.type, link.linkname = tarfile.LNKTYPE, ".warp/envs/a"
        archive.addfile(link)
    moved = moved_under(iter([buffer.getvalue()]), "artifacts")
    with tarfile.open(fileobj=io.BytesIO(moved)) as archive:
        names = [m.name for m in archive.getmembers()]
        assert names == ["artifacts"] + [f"artifacts/.warp{rest}" for rest in ("", "/envs", "/envs/a", "/envs/b")]
        assert archive.getmember("artifacts/.warp/envs/b").linkname == "artifacts/.warp/envs/a"


@pytest.mark.parametrize(
    ("output", "network_hint"),
    [
        (["ERROR: Could not find a version that satisfies the requirement zz", "No matching distribution found for zz"], False),
        (["WARNING: Retrying ... Failed to establish a new connection: [Errno -3] Temporary failure in name resolution"], True),
        (["error: Request failed after 3 retries", "dns error: failed to lookup address information"], True),
    ],
)
def test_a_failing_step_is_named_with_its_output_and_a_network_hint_only_when_the_index_was_unreachable(
    output: list[str], network_hint: bool
) -> None:
    with pytest.raises(StepFailed) as failed:
        build_failure(
            "The command '/bin/sh -c sh /opt/warptasks/build/deps.sh' returned a non-zero code: 2",
            "RUN sh deps.sh",
            "[deps 3/5] install requirements: requirements.txt",
            output,
            True,
        )
    assert str(failed.value).startswith("image build failed: step 'install requirements' exited with 2")
    assert failed.value.exit_code == 2 and output[-1] in failed.value.output
    assert ("--network host" in failed.value.hint) == network_hint


def test_a_server_chosen_at_build_time_is_remembered_for_warp_start_in_the_image() -> None:
    assert "ENV INVOKE_WARP_SERVER=gunicorn\n" in img.app_dockerfile(image_build(server="gunicorn"))
    assert "INVOKE_WARP_SERVER" not in img.app_dockerfile(image_build())


def test_s2i_lock_file_settings_are_named_and_an_unlocked_pipfile_is_refused(tmp_path: Path) -> None:
    lock = '{"_meta": {}, "default": {"six": {"version": "==1.17.0"}}, "develop": {}}'
    spec = detect(tmp_path / "a", {"wsgi.py": WSGI, "Pipfile.lock": lock, ".s2i/environment": "ENABLE_MICROPIPENV=true\n"})
    assert spec.dependencies.kind == "Pipfile.lock" and "ENABLE_MICROPIPENV" in spec.dependencies.why
    with pytest.raises(ConfigError, match="no Pipfile.lock") as raised:
        detect(tmp_path / "b", {"wsgi.py": WSGI, "Pipfile": "[packages]\nsix = '*'\n", ".s2i/environment": "ENABLE_PIPENV=1\n"})
    assert "pipenv lock" in raised.value.hint


def test_probed_facts_are_kept_by_image_id_so_a_rebuild_starts_no_probe_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each build probed its base image in a container (a quarter of a second of a code-only rebuild)."""
    from warptasks.image import build

    runs: list[str] = []

    def probe(client: object, image: str, python: str, request: dict[str, object], name: str = "") -> dict[str, object]:
        runs.append(name)
        return dict(PROBE_FACTS)

    monkeypatch.setattr(build, "probe_image_data", probe)
    first = build.cached_probe(None, "sha256:aaa", "python3", {}, tmp_path, name="debian:12")  # type: ignore[arg-type]
    again = build.cached_probe(None, "sha256:aaa", "python3", {}, tmp_path, name="debian:12")  # type: ignore[arg-type]
    assert runs == ["debian:12"] and first == again
    build.cached_probe(None, "sha256:bbb", "python3", {}, tmp_path, name="debian:12")  # type: ignore[arg-type]
    assert runs == ["debian:12", "debian:12"]  # another image under the same name is probed again


def test_a_code_only_change_reruns_only_the_code_copy_the_app_run_and_the_runtime_copy_of_the_project() -> None:
    """Everything of the build stage that is not the code comes before it; the runtime stage copies the project
    folder as the build left it, once (no staged copy of it inside the build stage)."""
    text = img.app_dockerfile(image_build(server="gunicorn"))
    build_stage = text.split("FROM bytecode AS build\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert build_stage[0] == "ENV INVOKE_WARP_SERVER=gunicorn" and build_stage[1].startswith("COPY warp/build/")
    assert build_stage[2] == f"COPY --chown={img.USER_ID}:0 src/ {img.PROJECT}/" and build_stage[3].startswith("RUN ")
    script = img.runtime_script(image_build())
    assert "tar " not in script and f"{img.PROJECT}/.warp/run" in script  # removed, not copied around
    assert f"warptasks.image.runtime {img.PROJECT} {img.START_DATA} {img.ENVS}\n" in script


def test_the_build_stage_imports_compiled_environments_the_runtime_copies_them_as_installed() -> None:
    """uv writes no bytecode: collectstatic compiled Django again on every code-only rebuild (half a second)."""
    text = img.app_dockerfile(image_build())
    assert f"FROM deps AS bytecode\nRUN /usr/local/bin/python3.11 -m compileall -qq -j 0 {img.ENVS} || true\n" in text
    assert f"COPY --from=deps --chown={img.USER_ID}:0 {img.ENVS}/ {img.ENVS}/" in text  # not from bytecode: no added size
    installed = img.app_dockerfile(image_build(env_stage="build"))  # the runtime copies the build stage's environments
    assert "compileall" not in installed and "FROM deps AS build\n" in installed
