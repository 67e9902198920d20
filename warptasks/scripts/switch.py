"""Point a symlink at a new target atomically: ``switch.py LINK TARGET [RECORD STATE [STATIC_NEXT STATIC]]``.

A new link beside the old one, renamed over it: whatever follows ``LINK``
sees either the old target or the new one, never nothing. With ``RECORD``
(what the build wrote of the new target), it is renamed over ``STATE`` just
before: the state never describes a target that is not current. With
``STATIC_NEXT`` (the new target's static files settings), it is renamed over
``STATIC`` too, or, when the build wrote none, ``STATIC`` is removed. Ctrl-C
or a dropped connection cannot land between the renames (ignored here).
"""

import os
import signal
import sys

for name in ("SIGINT", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
link, target = sys.argv[1], sys.argv[2]
if os.path.lexists(link + ".new"):
    os.unlink(link + ".new")
os.symlink(target, link + ".new")
if len(sys.argv) > 4:  # a missing record fails the step before anything changed
    os.replace(sys.argv[3], sys.argv[4])
if len(sys.argv) > 6:
    if os.path.lexists(sys.argv[5]):
        os.replace(sys.argv[5], sys.argv[6])
    elif os.path.lexists(sys.argv[6]):
        os.unlink(sys.argv[6])
os.replace(link + ".new", link)
