"""Which of a project's files leave this machine: into an image's build context, or into a deploy's release.

Both use one exclusion list, with gitignore semantics (:class:`pathspec.GitIgnoreSpec`;
a file under an excluded folder stays excluded, as in git):

* :data:`NOT_SOURCE`: version-control data, local environments and caches
  (``.git``, ``.warp``, ``.venv``, ``__pycache__``, ``*.pyc``...), folders, files or links alike. Never sent.
* :data:`SECRETS`: files that hold credentials, by their name: ``.env``,
  ``.env.*``, ``.envrc``, ``.netrc``, ``.pypirc``, ``.pgpass``,
  ``.git-credentials``, ``.docker/config.json``, the folders ``.ssh/``,
  ``.aws/`` and ``.gnupg/``, SSH private keys (``id_rsa``, ``id_dsa``,
  ``id_ecdsa``, ``id_ed25519`` and names that start so; their ``.pub`` halves
  are public and travel), ``*.key``, ``*.pem``, ``*.ppk``, ``*.p12``, ``*.pfx``;
  and, by content, any file that starts as a PEM or OpenSSH private key, or as
  a Kubernetes Secret manifest (``kind: Secret`` in its first lines, as in the
  ``secret.yaml`` warp kube writes, often inside the project's own folder).
  Every ``*.pem`` is withheld, certificates too: a ``.pem`` often holds a key
  beside its certificate, and one that is needed (a CA bundle) is shipped
  with one deliberate line (below). ``*.crt`` and ``*.cer`` travel.

Secrets are withheld even when git tracks them, and each is named (:attr:`Selection.withheld`).
A negation that matches one in ``.warpignore`` (releases) or in ``.dockerignore``
/ ``.s2iignore`` (images), such as ``!certs/ca.pem``, ships it deliberately, and
each one so shipped is named too (:attr:`Selection.on_purpose`).

A release (:func:`release_files`) is, inside a git work tree, the files git
tracks (untracked files never travel, ignored or not), less what
``.warpignore`` excludes; outside git, the folder's files less what the
``.gitignore`` files exclude (each relative to its own folder, a deeper one
winning) and ``.warpignore`` (which wins over them). A git that fails (a
repository another account owns, a damaged one) is an error: walking the
folder instead would ship untracked files. An image's context
(:func:`image_files`) is the folder's files less what ``.dockerignore`` and
``.s2iignore`` exclude, their patterns relative to the root and matched per
file, as Docker does; git is not asked.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from .detect import UNTRACKED_DIRS
from .errors import ConfigError

# Without a trailing slash: a link or file of such a name is left out too (a link named .warp would stand for the
# environment folder wherever the files land; a git worktree's .git file names a path of this machine).
NOT_SOURCE = (*sorted(UNTRACKED_DIRS), "*.pyc", "*.pyo")
SECRETS = (
    ".env",
    ".env.*",
    ".envrc",
    ".netrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    "**/.docker/config.json",
    ".ssh/",
    ".aws/",
    ".gnupg/",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "!id_*.pub",
    "*.key",
    "*.pem",
    "*.ppk",
    "*.p12",
    "*.pfx",
)
RELEASE_IGNORE = ".warpignore"
IMAGE_IGNORES = (".dockerignore", ".s2iignore")

_NOT_SOURCE = pathspec.GitIgnoreSpec.from_lines(NOT_SOURCE)
_SECRETS = pathspec.GitIgnoreSpec.from_lines(SECRETS)
_PRIVATE_KEY = re.compile(rb"^\s*(-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----|PuTTY-User-Key-File-)")
# A Kubernetes Secret manifest: a top-level "kind: Secret" in the head of the file (warp kube writes apiVersion, then kind).
_KUBE_SECRET = re.compile(rb"(?m)^kind:[ \t]*[\"']?Secret[\"']?[ \t]*\r?$")
_NO_RULES = pathspec.GitIgnoreSpec.from_lines([])

# Every git call warptasks makes: a project's .git/config is the project's to write, and core.fsmonitor (a command run
# by ls-files and status) or core.hooksPath would run its commands on this machine.
GIT = ("git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


@dataclass(frozen=True)
class Selection:
    """The files that go (relative POSIX paths, sorted), how they were chosen, and the secrets left out."""

    files: list[str]
    why: str
    withheld: tuple[str, ...] = ()  # "path (why it looks like a secret)"
    on_purpose: tuple[str, ...] = ()  # "path on purpose (listed in .warpignore)": secrets a negation ships


def excluded(spec: pathspec.PathSpec, rel: str) -> bool:
    """Whether ``spec`` excludes ``rel``, a folder on its path included (a negation cannot bring a file back from one)."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        if spec.check_file("/".join(parts[:depth]) + "/").include:
            return True
    return bool(spec.check_file(rel).include)


def secret_reason(root: Path, rel: str) -> str | None:
    """Why ``rel`` looks like a secret, or None."""
    if excluded(_SECRETS, rel):
        return "its name is one that credentials go by"
    if not (root / rel).is_file():
        return None  # a folder, a pipe, a dangling link: nothing to read (a pipe would block)
    try:
        with open(root / rel, "rb") as handle:
            head = handle.read(128)
    except OSError:
        return None  # unreadable here: sending it fails loudly later
    if _PRIVATE_KEY.match(head):
        return "it holds a private key"
    return "it is a Kubernetes Secret manifest" if _KUBE_SECRET.search(head) else None


def read_rules(path: Path) -> list[str]:
    """The pattern lines of an ignore file (none when it does not exist)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def negations(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """What the ``!`` lines of an ignore file bring back, as a spec that matches it: secrets shipped on purpose."""
    return pathspec.GitIgnoreSpec.from_lines(line[1:] for line in lines if line.startswith("!"))


def _keep_secrets_out(
    root: Path, files: Iterable[str], wanted: pathspec.PathSpec, hint: str, listed_in: str
) -> tuple[list[str], list[str], list[str]]:
    """(files that go, notes on the secrets held back, notes on the secrets shipped on purpose).

    ``wanted`` matches the secrets the project ships on purpose, with a ``!`` line of ``listed_in``: they go, but
    never silently, so a line copied from another project cannot ship credentials unnoticed.
    """
    kept, withheld, on_purpose = [], [], []
    for rel in files:
        reason = secret_reason(root, rel)
        if reason and wanted.match_file(rel):
            on_purpose.append(f"{rel} on purpose (listed in {listed_in})")
        elif reason:
            withheld.append(f"{rel} (looks like a secret: {reason}; {hint.format(path=rel)})")
            continue
        kept.append(rel)
    return kept, withheld, on_purpose


def _walk(root: Path, prune: Callable[[str], bool], enter: Callable[[str], None] = lambda _: None) -> list[str]:
    """Every file and symlink under ``root``, relative; folders of :data:`NOT_SOURCE` and those ``prune`` names skipped.

    ``enter`` sees each folder before its entries are judged (where nested ignore files are read).
    """
    found = []
    for directory, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        enter(rel_dir)
        # A linked folder is an entry of its own, never followed (it may point anywhere).
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        dirs[:] = sorted(d for d in dirs if d not in UNTRACKED_DIRS and d not in links and not prune(posixpath.join(rel_dir, d)))
        found += [posixpath.join(rel_dir, name) for name in names + links]
    return sorted(rel for rel in found if not excluded(_NOT_SOURCE, rel))


# -- images ----------------------------------------------------------------


def image_rules(root: Path) -> tuple[list[str], tuple[str, ...]]:
    """The ``.dockerignore`` and ``.s2iignore`` lines, anchored at the root, and which of those files exist."""
    lines = []
    for name in IMAGE_IGNORES:
        for raw in read_rules(root / name):
            line = raw.strip()
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = posixpath.normpath(pattern.lstrip("/")) if pattern.strip("/") else ""
            if pattern and pattern != ".":
                lines.append(("!" if negate else "") + "/" + pattern)
    return lines, tuple(name for name in IMAGE_IGNORES if (root / name).is_file())


def image_files(root: Path | str) -> Selection:
    """The files of an image's build context (and of the source an S2I builder gets)."""
    root = Path(root)
    lines, read = image_rules(root)
    rules = pathspec.GitIgnoreSpec.from_lines([*IMAGE_IGNORES, *lines])
    # Per file, as Docker matches: a negation brings a file back from an excluded folder.
    files = [rel for rel in _walk(root, lambda _: False) if not rules.match_file(rel)]
    hint = "a !{path} line in .dockerignore puts it in the image"
    kept, withheld, on_purpose = _keep_secrets_out(root, files, negations(lines), hint, " or ".join(read))
    why = "the folder's files, without VCS data, environments, caches, secrets" + (f" and {', '.join(read)}" if read else "")
    return Selection(kept, why, tuple(withheld), tuple(on_purpose))


# -- releases ----------------------------------------------------------------


class _GitIgnores:
    """The ``.gitignore`` files met on a walk, each made relative to the root, and ``.warpignore`` over them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[str] = []
        self.spec = _NO_RULES
        self.warp = pathspec.GitIgnoreSpec.from_lines(read_rules(root / RELEASE_IGNORE))

    def enter(self, rel_dir: str) -> None:
        lines = [_from_folder(line, rel_dir) for line in read_rules(self.root / rel_dir / ".gitignore")]
        if lines:
            # Later lines win in gitignore: a deeper file's come after its parents' (siblings never overlap).
            self.lines += lines
            self.spec = pathspec.GitIgnoreSpec.from_lines(self.lines)

    def ignores(self, rel: str) -> bool:
        verdict = self.warp.check_file(rel).include
        return bool(self.spec.check_file(rel).include if verdict is None else verdict)


def _from_folder(line: str, folder: str) -> str:
    """A ``.gitignore`` line of ``folder`` as a pattern relative to the root."""
    if not folder:
        return line
    negate = line.startswith("!")
    body = line[1:] if negate else line
    # A slash at the start or in the middle anchors a pattern to its file's folder; else it matches at any depth below.
    anchored = "/" in body.rstrip().rstrip("/")
    body = body.lstrip("/") if anchored else "**/" + body
    return ("!" if negate else "") + f"/{folder}/{body}"


def git_files(root: Path) -> list[str] | None:
    """What git tracks under ``root`` (as the working tree has it), or None when ``root`` is not in a git work tree."""
    if not any((folder / ".git").exists() for folder in (root.resolve(), *root.resolve().parents)):
        return None
    try:
        result = subprocess.run([*GIT, "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True, text=True, timeout=60)
        problem = result.stderr.strip() if result.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = f"git could not be run: {error}"
    if problem:
        raise ConfigError(f"{root} is in a git repository, but git cannot list its files: {problem}", _git_hint(problem, root))
    files = sorted(f for f in result.stdout.split("\0") if f)
    if not files:
        raise ConfigError(f"git tracks no file under {root}: a release would be empty", "git add and commit the project")
    return files


def _git_hint(problem: str, root: Path) -> str:
    if "dubious ownership" in problem:
        return (
            "another account owns the repository: deploy as its owner, "
            f"or trust it with git config --global --add safe.directory {root.resolve()}"
        )
    if "could not be run" in problem:
        return "install git (the files a release holds are the ones git tracks)"
    return "repair the repository (git status shows what is wrong), or deploy from a fresh clone"


def release_files(root: Path | str) -> Selection:
    """The files a deploy ships: see the module's description."""
    root = Path(root)
    tracked = git_files(root)
    hint = "a !{path} line in .warpignore ships it"
    warp_lines = read_rules(root / RELEASE_IGNORE)
    wanted = negations(warp_lines)
    if tracked is not None:
        warp = pathspec.GitIgnoreSpec.from_lines(warp_lines)
        files = [f for f in tracked if (root / f).is_file() and not excluded(_NOT_SOURCE, f) and not excluded(warp, f)]
        kept, withheld, on_purpose = _keep_secrets_out(root, files, wanted, hint, RELEASE_IGNORE)
        return Selection(kept, "the files git tracks, without secrets", tuple(withheld), tuple(on_purpose))
    ignores = _GitIgnores(root)
    walked = _walk(root, lambda rel: ignores.ignores(rel + "/"), ignores.enter)
    files = [rel for rel in walked if not ignores.ignores(rel) and (root / rel).is_file()]
    kept, withheld, on_purpose = _keep_secrets_out(root, files, wanted, hint, RELEASE_IGNORE)
    why = "the folder's files, without VCS data, environments, caches, secrets and ignored files"
    return Selection(kept, why, tuple(withheld), tuple(on_purpose))
