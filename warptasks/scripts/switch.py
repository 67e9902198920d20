"""Point a symlink at a new target atomically: ``switch.py LINK TARGET``.

A new link beside the old one, renamed over it: whatever follows ``LINK``
sees either the old target or the new one, never nothing.
"""

import os
import sys

link, target = sys.argv[1], sys.argv[2]
if os.path.lexists(link + ".new"):
    os.unlink(link + ".new")
os.symlink(target, link + ".new")
os.replace(link + ".new", link)
