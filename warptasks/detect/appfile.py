"""What a Python file of the project is, read from its syntax tree (never imported or run).

- :func:`read_script`: an ``app.py``/``main.py``: the web app object it defines at module level (``app =
  Flask(__name__)``, ``app = FastAPI()``, a plain WSGI/ASGI function), and whether it starts a server itself.
- :func:`setup_name`: the distribution name ``setup.py --name`` would print, when setup.py (or setup.cfg) states it
  literally.
- :func:`assigned_names`: the settings a gunicorn configuration file assigns.
"""

from __future__ import annotations

import ast
import configparser
import sys
from dataclasses import dataclass
from pathlib import Path

from .readsource import parse_source, read_source

# Application classes: the dotted name they are imported as -> the protocol their instances speak.
APP_CLASSES = {
    "flask.Flask": "wsgi",
    "flask.app.Flask": "wsgi",
    "bottle.Bottle": "wsgi",
    "falcon.App": "wsgi",
    "falcon.API": "wsgi",
    "fastapi.FastAPI": "asgi",
    "fastapi.applications.FastAPI": "asgi",
    "starlette.applications.Starlette": "asgi",
    "quart.Quart": "asgi",
    "quart.app.Quart": "asgi",
    "litestar.Litestar": "asgi",
    "litestar.app.Litestar": "asgi",
    "falcon.asgi.App": "asgi",
}
FRAMEWORKS = "Flask, FastAPI, Starlette, Quart, Litestar, Falcon or Bottle"

# The names of the calls that start a server: app.run(), uvicorn.run(...), waitress's serve(app),
# httpd.serve_forever(), aiohttp's web.run_app(app), werkzeug's run_simple(...), tornado's app.listen(...).
SERVE_CALLS = frozenset({"run", "serve", "serve_forever", "run_app", "run_simple", "run_server", "listen"})
# Modules whose run() starts no server.
NOT_SERVING = frozenset({"subprocess", "os", "shutil"})
# Standard-library calls that hand over to another program, which may be the server (os.execvp("gunicorn", ...)).
LAUNCHES = ("os.exec", "os.spawn", "os.posix_spawn", "os.system", "os.popen", "subprocess.")
# The names a module-level app object is looked up by first (gunicorn's default, then the frameworks').
APP_NAMES = ("application", "app")


@dataclass(frozen=True)
class Script:
    """What a Python file defines and does at import, as far as its text tells."""

    app: str | None = None  # the module-level name of its app object
    protocol: str | None = None  # "wsgi" or "asgi", for ``app``
    app_why: str = ""  # how the app was recognised: "app = Flask(...) (line 3)"
    serves: str = ""  # a server started at import (outside `if __name__ == "__main__":`): "app.run() (line 9)"
    main_serves: str = ""  # a server started only under `if __name__ == "__main__":`
    opaque: str = ""  # a module-level call whose effect cannot be read (it may start a server): "main() (line 4)"
    syntax_error: str = ""  # why Python cannot parse (or read) it


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain; None for anything else (calls, subscripts...)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the file's imports (anywhere at module level)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _resolve(node: ast.AST, imports: dict[str, str]) -> str | None:
    """The dotted name a callee stands for through the imports: ``FastAPI`` -> ``fastapi.FastAPI``."""
    dotted = _dotted(node)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    if head not in imports:
        return dotted
    return imports[head] + ("." + rest if rest else "")


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    strings = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return bool(names and strings)


def _statements(body: list[ast.stmt], guarded: bool = False):
    """(statement, under a __main__ guard) for every simple statement run at import: into if/try/with/for/while
    blocks, never into function or class bodies."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If):
            yield ast.Expr(node.test), guarded
            yield from _statements(node.body, guarded or _is_main_guard(node.test))
            yield from _statements(node.orelse, guarded)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            yield from _statements(node.body, guarded)
            yield from _statements(node.orelse, guarded)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                yield ast.Expr(item.context_expr), guarded
            yield from _statements(node.body, guarded)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for block in (node.body, node.orelse, node.finalbody):  # type: ignore[attr-defined]
                yield from _statements(block, guarded)
            for handler in node.handlers:  # type: ignore[attr-defined]
                yield from _statements(handler.body, guarded)
        else:
            yield node, guarded


def _shown(node: ast.AST) -> str:
    """A callee as the file writes it, shortened for a message."""
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _calls(node: ast.AST):
    return (n for n in ast.walk(node) if isinstance(n, ast.Call))


class _Reader:
    def __init__(self, tree: ast.Module, root: Path | None = None) -> None:
        self.root = root  # the folder the file's own modules are in: a factory imported from one of them is read too
        self.imports = _imports(tree)
        self.functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def serving(self, call: ast.Call, seen: frozenset[str] = frozenset()) -> str:
        """How ``call`` starts a server ("app.run()"), following calls to the file's own functions; "" if it does not."""
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        resolved = _resolve(func, self.imports) or ""
        if name in SERVE_CALLS and resolved.split(".")[0] not in NOT_SERVING:
            return f"{_shown(func)}() (line {call.lineno})"
        if isinstance(func, ast.Name) and func.id in self.functions and func.id not in seen:
            for inner in _calls(self.functions[func.id]):
                found = self.serving(inner, seen | {func.id})
                if found:
                    return f"{func.id}() (line {call.lineno}), which calls {found}"
        return ""

    def opaque(self, call: ast.Call) -> bool:
        """A call into code this file does not show (a function imported from outside the standard library, whose
        servers are started by the calls :data:`SERVE_CALLS` names): it may start a server."""
        dotted = _dotted(call.func)
        if not dotted or dotted.split(".")[0] not in self.imports:
            return False
        resolved = _resolve(call.func, self.imports) or ""
        return resolved.startswith(LAUNCHES) or resolved.split(".")[0] not in sys.stdlib_module_names

    def app_value(self, value: ast.expr, depth: int = 0) -> str | None:
        """The protocol of an app object made by ``value`` (``Flask(__name__)``, ``fastapi.FastAPI()``, or a call of a
        factory of this file or of a module beside it that makes one: ``create_app()``), else None."""
        if not isinstance(value, ast.Call):
            return None
        resolved = _resolve(value.func, self.imports) or ""
        if resolved in APP_CLASSES:
            return APP_CLASSES[resolved]
        if depth > 1:
            return None
        factory = self._factory(value.func, resolved)
        if factory is None:
            return None
        reader, function = factory
        for inner in _calls(function):
            protocol = reader.app_value(inner, depth + 1)
            if protocol:
                return protocol
        return None

    def _factory(self, func: ast.expr, resolved: str) -> tuple[_Reader, ast.FunctionDef | ast.AsyncFunctionDef] | None:
        """The function a call names, defined in this file or in a module of the project beside it."""
        if isinstance(func, ast.Name) and func.id in self.functions:
            return self, self.functions[func.id]
        module, _, name = resolved.rpartition(".")
        if not (module and self.root) or module.split(".")[0] in sys.stdlib_module_names:
            return None
        rel = module.replace(".", "/")
        for path in (self.root / f"{rel}.py", self.root / rel / "__init__.py"):
            if path.is_file():
                try:
                    tree = parse_source(path)
                except (OSError, SyntaxError, ValueError):
                    return None
                other = _Reader(tree)
                return (other, other.functions[name]) if name in other.functions else None
        return None


def _function_protocol(node: ast.AST) -> str | None:
    """A WSGI function (environ, start_response) or an ASGI one (async, scope, receive, send)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        count = len(node.args.posonlyargs) + len(node.args.args)
        if isinstance(node, ast.AsyncFunctionDef) and count == 3:
            return "asgi"
        if isinstance(node, ast.FunctionDef) and count == 2:
            return "wsgi"
    return None


def _find_app(tree: ast.Module, reader: _Reader) -> tuple[str | None, str | None, str]:
    """(name, protocol, why) of the app object the module defines at its top level."""
    objects: dict[str, tuple[str, str]] = {}
    assigned: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        assigned.update(names)
        protocol = reader.app_value(value) if value is not None else None
        if protocol and value is not None:
            made = _dotted(value.func) if isinstance(value, ast.Call) else None  # type: ignore[union-attr]
            for name in names:
                objects.setdefault(name, (protocol, f"{name} = {made}(...) (line {node.lineno})"))
        protocol = _function_protocol(node)
        if protocol and node.name in APP_NAMES:  # type: ignore[attr-defined]
            kind = "an ASGI function" if protocol == "asgi" else "a WSGI function"
            objects.setdefault(node.name, (protocol, f"{node.name}() (line {node.lineno}), {kind}"))  # type: ignore[attr-defined]
    if not objects:
        return None, None, ""
    for name in APP_NAMES:
        if name in objects:
            return name, *objects[name]
    first = next(iter(objects))
    protocol, why = objects[first]
    if "application" in assigned:
        # application = SomeMiddleware(app): the wrapped app, as gunicorn and mod_wsgi load it by default.
        return "application", protocol, f"{why}, wrapped as application"
    return first, protocol, why


def read_script(path: Path) -> Script:
    """What ``path`` defines and starts (see :class:`Script`); a file Python cannot parse is neither."""
    try:
        tree = parse_source(path)
    except (SyntaxError, ValueError) as error:
        return Script(syntax_error=str(error))
    except OSError as error:
        return Script(syntax_error=f"it cannot be read: {error.strerror}")
    reader = _Reader(tree, path.parent)
    app, protocol, app_why = _find_app(tree, reader)
    serves = main_serves = opaque = ""
    for statement, guarded in _statements(tree.body):
        for call in _calls(statement):
            found = reader.serving(call)
            if found and guarded:
                main_serves = main_serves or found
            elif found:
                serves = serves or found
            elif not opaque and reader.opaque(call) and reader.app_value(call) is None:
                opaque = f"{_shown(call.func)}() (line {call.lineno})"
    return Script(app, protocol, app_why, serves, main_serves, opaque)


def _literal(tree: ast.Module, node: ast.expr) -> str | None:
    """A string ``node`` is, directly or through one module-level ``NAME = "..."``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in statement.targets):
                value = statement.value
                return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    return None


def setup_name(root: Path) -> tuple[str | None, str]:
    """(the name ``setup.py --name`` prints, where it was read), when the files state it literally; (None, why) else.

    ``setup(name="testapp")`` (or ``name=NAME`` with ``NAME = "testapp"``) in setup.py, else ``[metadata] name`` in
    setup.cfg, which setuptools reads for ``setup.py --name`` too.
    """
    setup_py = root / "setup.py"
    if setup_py.is_file():
        try:
            tree = parse_source(setup_py)
        except (OSError, SyntaxError, ValueError):
            return None, "setup.py cannot be parsed"
        for call in _calls(tree):
            callee = _dotted(call.func) or ""
            if callee.split(".")[-1] != "setup":
                continue
            for keyword in call.keywords:
                if keyword.arg == "name":
                    name = _literal(tree, keyword.value)
                    if name and name.strip():
                        return name.strip(), "setup.py"
                    return None, f"setup.py's name= is not a literal (line {keyword.value.lineno})"
    setup_cfg = root / "setup.cfg"
    if setup_cfg.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(read_source(setup_cfg))
        except (OSError, configparser.Error):
            return None, "setup.cfg cannot be parsed"
        name = parser.get("metadata", "name", fallback="").strip()
        if name and "%" not in name and ":" not in name:
            return name, "setup.cfg [metadata] name"
    if setup_py.is_file():
        return None, "setup.py states no literal name="
    return None, "no setup.py"


def module_name(distribution: str) -> str:
    """The module a distribution name stands for, as S2I's gunicorn imports it: ``my-app`` -> ``my_app``."""
    return distribution.strip().replace("-", "_")


def assigned_names(path: Path) -> tuple[str, ...]:
    """The names a configuration file assigns at its top level (gunicorn's settings), in order; () if unreadable."""
    try:
        tree = parse_source(path)
    except (OSError, SyntaxError, ValueError):
        return ()
    names: list[str] = []
    for node, _guarded in _statements(tree.body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and not name.id.startswith("_") and name.id not in names:
                    names.append(name.id)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in names:
            names.append(node.name)  # server hooks: on_starting, post_fork...
    return tuple(names)
