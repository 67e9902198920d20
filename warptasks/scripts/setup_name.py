"""Serve the module ``setup.py --name`` names: ``setup_name.py [--as USER GROUP] PLACEHOLDER -- COMMAND ARGS...``.

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


args = sys.argv[1:]
account = None
if args[:1] == ["--as"] and len(args) > 3:
    # Started as root for a server that drops its own privileges (Apache): setup.py runs as the workers' account.
    account, args = (args[1], args[2]), args[3:]
if len(args) < 3 or args[1] != "--":
    fail("usage: setup_name.py [--as USER GROUP] PLACEHOLDER -- COMMAND ARGS...")
placeholder, command = args[0], args[2:]


def _drop():
    import grp
    import pwd

    entry = pwd.getpwnam(account[0])
    os.setgroups([])
    os.setgid(grp.getgrnam(account[1]).gr_gid)
    os.setuid(entry.pw_uid)


try:
    result = subprocess.run(
        [sys.executable, "setup.py", "--name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        preexec_fn=_drop if account else None,
    )
except (OSError, KeyError, subprocess.SubprocessError) as error:
    fail("cannot run setup.py --name: %s" % error)
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
