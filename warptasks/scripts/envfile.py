"""Environment files, read literally: the one parser, and ``envfile.py FILE -- COMMAND ARGS...``.

A file holds ``NAME=VALUE`` lines: blank lines and ``#`` comments are
skipped, an ``export`` prefix is allowed, spaces around the name and the
value are dropped, and one pair of matching quotes around the whole value is
removed. Nothing else is interpreted: ``$``, backticks, ``\\``, ``#``, ``;``
and ``=`` inside a value are kept as written, because no shell ever reads it.
(A file sourced by a shell turned ``pa$word1`` into ``pa``, broke on
``k9$x2&(z)!=a`` and ran backticks.)

Detection imports :func:`parse` for a project's ``.s2i/environment`` and
``.warpdrive/environment``; a deploy writes files with :func:`render`, which
:func:`parse` reads back exactly. As a script it is sent to a target and runs
a command with the files' values added to its environment::

    python envfile.py FILE [FILE...] -- COMMAND ARGS...

Later files win. A missing FILE adds nothing. A line that is not
``NAME=VALUE`` stops with the file and line named and exit status 2; a
COMMAND that cannot run, 127 (126 when not executable), as a shell would.
The command is exec'd directly, never through a shell. Standard library only
and old syntax: it runs on whatever Python a target has.
"""

import errno
import io
import os
import re
import sys

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would accept a trailing newline


class EnvFileError(ValueError):
    """A line that is not ``NAME=VALUE``: the file, the line number and the line, in the message."""

    def __init__(self, source, number, line):
        ValueError.__init__(self, "%s, line %d: expected NAME=VALUE, found %r" % (source, number, line))
        self.source, self.number, self.line = source, number, line


def parse(text, source):
    """The ``NAME=VALUE`` lines of ``text`` as a dict (later lines win); ``source`` names the file in errors."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        name, sep, value = line.partition("=")
        name = name.strip()
        # ASCII only, as a shell accepts; str.isalnum() would let "É" through to fail later without a line number.
        if not sep or not _NAME.match(name):
            raise EnvFileError(source, number, raw.strip())
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def read(path):
    """The values of the file at ``path``; none when it does not exist (any other failure to read it raises)."""
    try:
        with io.open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except (IOError, OSError) as error:
        if error.errno == errno.ENOENT:
            return {}
        raise
    return parse(text, path)


# What str.splitlines() ends a line at: a value holding one cannot be written on one line.
_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def render(values):
    """``values`` as a file :func:`parse` reads back exactly: each value in double quotes, which parse removes.

    A name that is not a variable name, or a value holding a line break or a NUL byte (which no environment
    can carry), is a ValueError naming it.
    """
    lines = []
    for name in sorted(values):
        value = values[name]
        if not _NAME.match(name):
            raise ValueError("%r is not an environment variable name" % name)
        if "\0" in value or any(brk in value for brk in _LINE_BREAKS):
            raise ValueError("the value of %s holds a line break or a NUL byte" % name)
        lines.append('%s="%s"\n' % (name, value))
    return "".join(lines)


def _fail(message, status):
    sys.stderr.write("envfile.py: %s\n" % message)
    sys.exit(status)


def main(argv):
    split = argv.index("--") if "--" in argv else -1
    if split < 1 or split == len(argv) - 1:
        _fail("usage: envfile.py FILE [FILE...] -- COMMAND ARGS...", 2)
    paths, command = argv[:split], argv[split + 1 :]
    env = dict(os.environ)
    for path in paths:
        try:
            env.update(read(path))
        except EnvFileError as error:
            _fail(str(error), 2)
        except (IOError, OSError) as error:
            _fail("cannot read %s: %s" % (path, error.strerror), 2)
    try:
        os.execvpe(command[0], command, env)
    except ValueError as error:  # a NUL byte in a value or an argument
        _fail("cannot run %s: %s" % (command[0], error), 2)
    except (IOError, OSError) as error:
        _fail("cannot run %s: %s" % (command[0], error.strerror), 126 if error.errno == errno.EACCES else 127)


if __name__ == "__main__":
    main(sys.argv[1:])
