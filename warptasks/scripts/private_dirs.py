"""Make folders only this account can enter, then exec a command: ``private_dirs.py GROUP DIR... -- COMMAND ARGS...``.

mod_wsgi-express keeps its generated Apache configuration, its ``apachectl``
(which sources an ``envvars`` file from the same folder) and its daemon
sockets in its server root. A folder another account made, or can write to,
would run that account's ``envvars`` as this one, or let it answer the app's
requests. So each DIR is made if missing, and one that exists must be a real
folder (not a link) owned by this account; then it is closed to everyone
else: mode 0700, or, with GROUP (as root, the group Apache's workers run as,
which must reach the sockets and the handler script), 0750 with that group.

It runs as part of the server's command, not as a separate step, so a server
started again later (a systemd restart at boot, after /tmp was emptied) finds
its folders checked and in place. Standard library only, old syntax: it runs
with whatever Python the environment has.
"""

import errno
import grp
import os
import stat
import sys


def fail(message):
    sys.stderr.write("warp: %s\n" % message)
    sys.exit(1)


def private(path, gid):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    try:
        os.mkdir(path, 0o700)
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise
    try:
        # O_NOFOLLOW: a link planted in place of the folder is refused, never followed.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        fail("%s is not a folder (%s): remove it, it may have been planted" % (path, error.strerror))
    try:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            fail(
                "%s belongs to uid %d, not to this account (uid %d): another account made it first, "
                "so what it holds cannot be trusted; remove it" % (path, info.st_uid, os.geteuid())
            )
        if gid >= 0:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, 0o750 if gid >= 0 else 0o700)
    finally:
        os.close(fd)


def main(argv):
    if "--" not in argv or argv.index("--") < 2 or argv.index("--") == len(argv) - 1:
        fail("usage: private_dirs.py GROUP DIR... -- COMMAND ARGS...")
    split = argv.index("--")
    group, dirs, command = argv[0], argv[1:split], argv[split + 1 :]
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        fail("no group %r on this machine for Apache's workers: pass --group naming one" % group)
    for path in dirs:
        private(os.path.abspath(path), gid)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
