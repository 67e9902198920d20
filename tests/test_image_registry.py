"""Image names, the git commit tag and push errors (pure tier; the push itself: tests/container/test_image_push.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests

from tests.cases import as_git_repo, write_tree
from warptasks.errors import ConfigError
from warptasks.image.dockerfile import ImageName
from warptasks.image.registry import (
    PushFailed,
    check_pushable,
    commit_tag,
    image_names,
    push_failure,
    push_images,
    registry_of,
)


@pytest.mark.parametrize(
    ("name", "registry"),
    [
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000"),
        ("registry.example.com/app", "registry.example.com"),
        ("localhost/app", "localhost"),
        ("user/app", "docker.io"),
        ("app", "docker.io"),
    ],
)
def test_the_registry_is_read_from_the_name_as_the_engine_reads_it(name: str, registry: str) -> None:
    assert registry_of(ImageName(name, "1")) == registry


def test_every_tag_names_the_image_and_each_repository_gets_the_commit() -> None:
    names = image_names(["r.example.com/a:1.0", "r.example.com/a:latest", "other.example.com/b"], "warp-x:latest", "abc1234")
    assert [str(n) for n in names] == [
        "r.example.com/a:1.0",
        "r.example.com/a:latest",
        "other.example.com/b:latest",
        "r.example.com/a:abc1234",
        "other.example.com/b:abc1234",
    ]


def test_without_tags_the_default_name_is_the_main_one() -> None:
    assert [str(n) for n in image_names([], "warp-site:latest", None)] == ["warp-site:latest"]


def test_push_of_a_name_without_registry_is_refused_before_building() -> None:
    with pytest.raises(ConfigError, match="--push needs a name in a registry") as caught:
        check_pushable(image_names([], "warp-site:latest", None))
    assert "--tag registry.example.com/team/app:1.0" in caught.value.hint
    check_pushable(image_names(["127.0.0.1:5000/site:1"], "warp-site:latest", None))


PUSH_ERRORS = {
    "http to https": (
        'Get "https://10.0.0.5:5000/v2/": http: server gave HTTP response to HTTPS client',
        "plain HTTP",
        '"insecure-registries": ["10.0.0.5:5000"]',
    ),
    "unknown CA": (
        'Get "https://10.0.0.5:5000/v2/": x509: certificate signed by unknown authority',
        "does not trust the registry's TLS certificate",
        "/etc/docker/certs.d/10.0.0.5:5000/ca.crt",
    ),
    "no credentials": ("no basic auth credentials", "refused the credentials", "docker login 10.0.0.5:5000"),
    "wrong credentials": (
        "unauthorized: authentication required",
        "refused the credentials",
        "DOCKER_CONFIG",
    ),
    "unreachable": (
        'Get "https://10.0.0.5:5000/v2/": dial tcp 10.0.0.5:5000: connect: connection refused',
        "could not reach the registry",
        "that it runs",
    ),
}


@pytest.mark.parametrize(("error", "cause", "hint"), PUSH_ERRORS.values(), ids=PUSH_ERRORS.keys())
def test_a_push_error_says_its_cause_and_what_to_do(error: str, cause: str, hint: str) -> None:
    failure = push_failure(ImageName("10.0.0.5:5000/team/app", "1.0"), error)
    assert failure.message.startswith("could not push 10.0.0.5:5000/team/app:1.0: ")
    assert cause in failure.message and hint in failure.hint


def test_a_clean_git_checkout_gives_its_short_commit(tmp_path: Path) -> None:
    as_git_repo(write_tree(tmp_path, {"wsgi.py": "", ".gitignore": ".warp/\n"}))
    tag = commit_tag(str(tmp_path))
    assert tag.tag and len(tag.tag) == 12 and tag.tag in tag.why
    (tmp_path / ".warp").mkdir()  # not source: never in an image
    (tmp_path / ".warp" / "state.json").write_text("{}\n")
    assert commit_tag(str(tmp_path)).tag == tag.tag


@pytest.mark.parametrize("extra", ["views_new.py", "db.sqlite3"])
def test_files_the_image_gets_but_the_commit_lacks_get_no_commit_tag(tmp_path: Path, extra: str) -> None:
    """An untracked or git-ignored file goes into the image: a tag naming the commit would promise other code."""
    as_git_repo(write_tree(tmp_path, {"wsgi.py": "", ".gitignore": ".warp/\ndb.sqlite3\n"}))
    (tmp_path / extra).write_text("not committed\n")
    tag = commit_tag(str(tmp_path))
    assert tag.tag is None and extra in tag.why and ".dockerignore" in tag.why
    (tmp_path / ".dockerignore").write_text(f"{extra}\n.dockerignore\n")  # left out, itself included
    assert commit_tag(str(tmp_path)).tag is not None


def test_uncommitted_changes_get_no_commit_tag(tmp_path: Path) -> None:
    as_git_repo(write_tree(tmp_path, {"wsgi.py": ""}))
    (tmp_path / "wsgi.py").write_text("changed = True\n")
    tag = commit_tag(str(tmp_path))
    assert tag.tag is None and "uncommitted changes" in tag.why


def test_a_folder_outside_git_gets_no_commit_tag(tmp_path: Path) -> None:
    assert commit_tag(str(tmp_path)).tag is None


def test_push_and_repeatable_tags_are_options_of_both_image_tasks_and_no_option_takes_h() -> None:
    from warptasks.tasks.image import builder, s2i

    for task in (s2i, builder):
        arguments = {name: argument for argument in task.get_arguments() for name in argument.names}
        assert "push" in arguments and arguments["tag"].kind is list
        assert "h" not in arguments  # `warp s2i -h` is never --push
    assert "no-commit-tag" in {name for argument in s2i.get_arguments() for name in argument.names}


class _Images:
    """A client's images whose push of ``stop_at`` stops: Ctrl-C, or a registry error."""

    def __init__(self, stop_at: str, stop: BaseException) -> None:
        self.stop_at, self.stop = stop_at, stop

    def push(self, repository: str, tag: str, stream: bool, decode: bool) -> list[dict[str, object]]:
        if f"{repository}:{tag}" == self.stop_at:
            raise self.stop
        return [{"aux": {"Digest": "sha256:" + "0" * 64}}]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), docker.errors.APIError("denied: requested access is denied")])
def test_a_push_stopped_part_way_says_which_names_were_pushed_and_which_not(stop: BaseException) -> None:
    names = [ImageName("127.0.0.1:5000/app", t) for t in ("1.0", "latest", "abc1234")]
    client = SimpleNamespace(images=_Images("127.0.0.1:5000/app:latest", stop))
    said: list[str] = []
    with pytest.raises((KeyboardInterrupt, PushFailed)):
        push_images(client, names, said.append)  # type: ignore[arg-type]
    if isinstance(stop, KeyboardInterrupt):  # where in the push it came, no one knows: the name is not said untouched
        assert said[-1] == (
            "push stopped: pushed 127.0.0.1:5000/app:1.0; 127.0.0.1:5000/app:latest was being pushed and may or may not "
            "have reached the registry (push it again); not pushed: 127.0.0.1:5000/app:abc1234 "
            "(the registry keeps what those names had before)"
        )
    else:
        assert said[-1] == (
            "push stopped: pushed 127.0.0.1:5000/app:1.0; not pushed: 127.0.0.1:5000/app:latest, 127.0.0.1:5000/app:abc1234 "
            "(the registry keeps what those names had before)"
        )


class _Streams(_Images):
    """A push whose stream stops after the layers went: the engine may have put the manifest when Ctrl-C came."""

    def push(self, repository: str, tag: str, stream: bool, decode: bool) -> Any:
        if f"{repository}:{tag}" != self.stop_at:
            return super().push(repository, tag, stream, decode)

        def chunks() -> Any:
            yield {"status": "Pushed", "id": "0123abcd"}
            yield {"status": "latest: digest: sha256:" + "1" * 64}
            raise self.stop

        return chunks()


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), requests.exceptions.ConnectionError("Connection aborted")])
def test_a_push_interrupted_mid_stream_never_says_the_registry_kept_that_name(stop: BaseException) -> None:
    """Ctrl-C (or the engine's connection lost, which no DockerException wraps) after the manifest went: saying
    the registry kept what the name had before would be false; and the outcome is said for either."""
    names = [ImageName("127.0.0.1:5000/app", t) for t in ("1.0", "latest")]
    client = SimpleNamespace(images=_Streams("127.0.0.1:5000/app:latest", stop))
    said: list[str] = []
    with pytest.raises(type(stop)):
        push_images(client, names, said.append)  # type: ignore[arg-type]
    assert said[-1] == (
        "push stopped: pushed 127.0.0.1:5000/app:1.0; 127.0.0.1:5000/app:latest was being pushed and may or may not "
        "have reached the registry (push it again)"
    )


def test_a_failed_push_s_hint_never_says_nothing_else_was_pushed() -> None:
    assert "nothing else" not in (push_failure(ImageName("r.example/app", "1"), "something odd").hint or "")
