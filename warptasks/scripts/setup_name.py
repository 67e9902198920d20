"""Serve the module ``setup.py --name`` names: ``setup_name.py PLACEHOLDER -- COMMAND ARGS...``.

When setup.py does not state its name literally, detection cannot read it (it never runs the project's code), so
the start plan names the app's module PLACEHOLDER and puts this in front of the server: run in the app's folder
with the environment's Python, it runs ``python setup.py --name`` there (as the S2I builder's run script does),
turns the name into a module name (``-`` -> ``_``), puts it in place of PLACEHOLDER in COMMAND and its environment,
and execs COMMAND (never through a shell). Exit status 1, saying why, when setup.py prints no usable name.
"""

import os
import re
import subprocess
import sys

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def fail(message):
    sys.stderr.write("setup_name.py: %s\n" % message)
    sys.exit(1)


if len(sys.argv) < 4 or sys.argv[2] != "--":
    fail("usage: setup_name.py PLACEHOLDER -- COMMAND ARGS...")
placeholder, command = sys.argv[1], sys.argv[3:]
result = subprocess.run(
    [sys.executable, "setup.py", "--name"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True
)
lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
if result.returncode != 0 or not lines:
    fail(
        "python setup.py --name failed (exit %d), so the app's module is unknown:\n%s\n"
        'set APP_MODULE=module:callable in .s2i/environment, or write setup(name="...") literally'
        % (result.returncode, result.stderr.strip()[-2000:])
    )
module = lines[-1].replace("-", "_")
if not _MODULE.match(module):
    fail("setup.py --name printed %r, which is not a module name: set APP_MODULE=module:callable" % lines[-1])
sys.stderr.write("setup_name.py: setup.py --name is %r: serving %s:application\n" % (lines[-1], module))
for name, value in list(os.environ.items()):
    if placeholder in value:
        os.environ[name] = value.replace(placeholder, module)
argv = [arg.replace(placeholder, module) for arg in command]
try:
    os.execvp(argv[0], argv)
except OSError as error:
    fail("cannot run %s: %s" % (argv[0], error.strerror))
