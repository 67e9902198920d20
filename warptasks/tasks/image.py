"""The image tasks, ``warp.s2i`` and ``warp.builder``: thin wrappers over :mod:`warptasks.image`.

They import the image modules (and with them the Docker SDK) only when they run: the
collection is loaded by every ``warp build`` and ``warp start``, which need neither.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NoAppFound
from ..run import local as actions
from ..settings import Settings
from .flags import warp_task
from .report import OPTION_HELP, reported

IMAGE_HELP = {
    "project": OPTION_HELP["project"],
    "tag": "the image name, registry included to push (registry.example.com/team/app:1.0); repeatable: every one "
    "names the image, the first is its main name (default warp-<project folder>:latest)",
    "base-image": "the image to build on (default: the official python:X.Y-slim for the project's Python)",
    "network": "the build's network, e.g. host where the engine's default bridge has no outbound access",
    "build-env": "NAME=VALUE for the build steps (package index, proxy), not the running app; shown by docker history: "
    "no secrets; repeatable",
    "server": OPTION_HELP["server"],
    "installer": OPTION_HELP["installer"],
    "quiet": "do not stream the build output (a failing step's output is still shown)",
    "no-pull": "never pull a missing base image",
    "no-cache": "rebuild every layer instead of reusing the engine's cached ones",
    "ca-bundle": "a CA bundle the build trusts for the package index (a TLS-inspecting proxy's, say)",
}
BUILD_CA = "/etc/ssl/certs/warp-build-ca.pem"
CA_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")


def _build_env(values: list[str] | None) -> dict[str, str]:
    env = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--build-env {item!r} is not NAME=VALUE", "write it as --build-env PIP_INDEX_URL=https://...")
        env[name] = value
    return env


def _options(
    tag: Any,
    base_image: Any,
    network: Any,
    build_env: Any,
    installer: Any,
    quiet: bool,
    no_pull: bool,
    no_cache: bool,
    ca_bundle: Any,
    incremental: bool = False,
) -> Any:
    from ..image.engine import ImageOptions

    env = _build_env(build_env)
    files = {}
    if ca_bundle:
        try:
            files[BUILD_CA] = Path(ca_bundle).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the CA bundle {ca_bundle}: {exc.strerror}", "pass a readable PEM file") from None
        env = {name: BUILD_CA for name in CA_VARIABLES} | env
    return ImageOptions(
        tag=tag,
        base_image=base_image,
        network=network,
        build_env=env,
        extra_files=files,
        installer=installer or "auto",
        quiet=quiet,
        pull=not no_pull,
        incremental=incremental,
        cache=not no_cache,
    )


@warp_task(
    help=IMAGE_HELP
    | {
        "builder": "build the S2I way with this builder image (source into it, assemble, commit)",
        "incremental": "with --builder: reuse the environment saved in the previous image",
        "push": "push every name of the image (each --tag, and its git commit tag) to its registry, with the "
        "credentials of the Docker config (DOCKER_CONFIG or ~/.docker: docker login, credential helpers)",
        "no-commit-tag": "do not also tag the image with the project's git commit (short sha)",
    },
    iterable=["build_env", "tag"],
)
def s2i(
    c,
    project=None,
    tag=None,
    base_image=None,
    network=None,
    build_env=None,
    server=None,
    installer=None,
    builder=None,
    incremental=False,
    quiet=False,
    no_pull=False,
    no_cache=False,
    ca_bundle=None,
    push=False,
    no_commit_tag=False,
):
    """Build a runnable application image: the same build steps and server as warp build and warp start; --push
    sends it to a registry."""
    with reported():
        from ..image import dockerfile as img
        from ..image import registry
        from ..image.build import build_app_image
        from ..image.engine import engine, say_line
        from ..image.s2i import s2i_build

        opts = Settings.resolve(c.config, project=project, server=server, installer=installer)
        spec = actions.detect(opts)
        commit = registry.CommitTag(None, "") if no_commit_tag else registry.commit_tag(spec.root)
        names = registry.image_names(tag or [], img.default_image_name(spec), commit.tag)
        if push:
            registry.check_pushable(names)  # before a build of minutes, not after
        main = str(names[0])
        options = _options(main, base_image, network, build_env, opts.installer, quiet, no_pull, no_cache, ca_bundle, incremental)
        if opts.server:  # chosen outside the project's files: the image must remember it
            options = replace(options, server=spec.server)
        client = engine()
        if builder:
            result = s2i_build(spec, options, builder, client=client)
        else:
            result = build_app_image(spec, options, client=client)
        registry.tag_all(client, result.image_id, names[1:])
        if commit.why:
            say_line(commit.why)
        if push:
            registry.push_images(client, names, say_line)
        port = img.app_port(spec)  # the project's PORT (environment file), else 8080: what the image serves on
        print(f"run it: docker run --rm -p {port}:{port} {result.name}")


BUILDER_HELP = {k: v for k, v in IMAGE_HELP.items() if k not in ("server", "installer")}


@warp_task(
    help=BUILDER_HELP
    | {
        "tag": "the builder image name, registry included to push; repeatable (default warp-builder:latest)",
        "push": "push every name of the builder image to its registry (credentials as for warp s2i --push)",
    },
    iterable=["build_env", "tag"],
)
def builder(
    c,
    project=None,
    tag=None,
    base_image=None,
    network=None,
    build_env=None,
    quiet=False,
    no_pull=False,
    no_cache=False,
    ca_bundle=None,
    push=False,
):
    """Build an S2I builder image (for s2i build and OpenShift) that builds apps as warp build does."""
    with reported():
        from ..image import registry
        from ..image.build import build_builder_image
        from ..image.engine import engine, say_line

        opts = Settings.resolve(c.config, project=project)
        try:
            spec = actions.detect(opts)  # a project only decides the default base image (its Python) and the commit
        except NoAppFound:
            spec = None
        # No commit tag: a builder is warptasks and a base image, whatever project it was built from.
        names = registry.image_names(tag or [], "warp-builder:latest", None)
        if push:
            registry.check_pushable(names)
        client = engine()
        result = build_builder_image(
            spec,
            _options(str(names[0]), base_image, network, build_env, None, quiet, no_pull, no_cache, ca_bundle),
            client=client,
        )
        registry.tag_all(client, result.image_id, names[1:])
        if push:
            registry.push_images(client, names, say_line)
        print(f"use it: s2i build <source> {result.name} <app-image>")
