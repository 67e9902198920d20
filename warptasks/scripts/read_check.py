"""Check that an account can use a Python and read paths: ``read_check.py USER GROUP PYTHON PATH...``.

Run as root before a server starts: the server (mod_wsgi: Apache's workers)
runs as USER, and a Python or project it cannot read makes the start or every
request fail later, unclearly.
"""

import grp
import os
import pwd
import subprocess
import sys

user, group, python = sys.argv[1:4]
paths = sys.argv[4:]
uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def drop():
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


code = "import encodings, os, sys\nfor p in sys.argv[1:]:\n    os.listdir(p) if os.path.isdir(p) else open(p).close()"
real = os.path.realpath(python)
try:
    r = subprocess.run([python, "-c", code] + paths, preexec_fn=drop, capture_output=True, text=True)
except OSError as e:
    print("%s cannot run %s (it is %s): %s" % (user, python, real, e.strerror))
    sys.exit(1)
if r.returncode:
    lines = (r.stderr or r.stdout).strip().splitlines()
    print("%s cannot use %s (Python %s): %s" % (user, python, real, lines[-1] if lines else "exit %d" % r.returncode))
    sys.exit(1)
