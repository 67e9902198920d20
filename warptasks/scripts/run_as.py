"""Run a command as an unprivileged account: ``run_as.py USER GROUP -- COMMAND ARGS...``.

``warp start`` as root (a root deploy's too) puts this in front of every
server but mod_wsgi (whose Apache must stay root to bind its sockets, and runs
its own workers as an account): an app served as root turns any hole in it, or
in the server, into the whole machine. The supplementary groups are cleared,
then the group and the user set, and the result is checked, not assumed: every
user and group id must be the account's, and getting root back must fail.
Only then is COMMAND exec'd (never through a shell), with HOME (when it was
root's or unset), USER and LOGNAME naming the account.

Exit status 2 for wrong use or an unknown account, 1 when the ids cannot be
changed (not started as root), 127 (126 when not executable) for a COMMAND
that cannot run, as a shell would. Standard library only, old syntax: it runs
with whatever Python the environment has.
"""

import errno
import grp
import os
import pwd
import sys


def fail(message, status=1):
    sys.stderr.write("run_as.py: %s\n" % message)
    sys.exit(status)


def account(user, group):
    """(the user's passwd entry, the group's id); a clear error for a name this machine does not have."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        fail("no account %r on this machine for the server to run as: pass --user naming one" % user, 2)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        fail("no group %r on this machine for the server to run as: pass --group naming one" % group, 2)
    if entry.pw_uid == 0 or gid == 0:
        fail("%s:%s is root's own account or group: name an unprivileged one with --user/--group" % (user, group), 2)
    return entry, gid


def drop(uid, gid):
    """Become ``uid``:``gid`` with no other group, for good."""
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as error:
        fail("cannot change to uid %d, gid %d (%s): start as root, or without --user" % (uid, gid, error.strerror))
    # Real, effective and saved ids: a saved uid 0 would let the server become root again.
    uids = os.getresuid() if hasattr(os, "getresuid") else (os.getuid(), os.geteuid())
    gids = os.getresgid() if hasattr(os, "getresgid") else (os.getgid(), os.getegid())
    if set(uids) != {uid} or set(gids) != {gid}:
        fail("uids %r, gids %r after changing to uid %d, gid %d" % (uids, gids, uid, gid))
    if os.getgroups() not in ([], [gid]):
        fail("supplementary groups %r remain after changing to gid %d" % (os.getgroups(), gid))
    try:
        os.setuid(0)
    except OSError:
        return
    fail("root could be taken back after changing to uid %d: refusing to run" % uid)


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        fail("usage: run_as.py USER GROUP -- COMMAND ARGS...", 2)
    (user, group), command = argv[:2], argv[3:]
    entry, gid = account(user, group)
    env = dict(os.environ)
    # Root's home is not the server's: what the app writes or reads under ~ is the account's own.
    if env.get("HOME") in (None, "", pwd.getpwuid(0).pw_dir):
        env["HOME"] = entry.pw_dir
    env["USER"] = env["LOGNAME"] = user
    drop(entry.pw_uid, gid)
    try:
        os.execvpe(command[0], command, env)
    except (IOError, OSError) as error:
        fail("cannot run %s: %s" % (command[0], error.strerror), 126 if error.errno == errno.EACCES else 127)


if __name__ == "__main__":
    main(sys.argv[1:])
