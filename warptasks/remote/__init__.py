"""The hosts target: the same build and start on remote hosts over SSH (fabric).

- ``deploy.py``: deploy across hosts, phase by phase.
- ``rollback.py``: status and rollback across hosts.
- ``manage.py``: the day-2 operations on the live release: config, restart, stop, start, audit.
- ``commands.py``: their arguments and ``--json``'s shape (pure: the ``warp`` command imports it).
- ``fleet.py``: a phase on every host in parallel; the cleanup after any end; per-host results and their summary.
- ``host.py``: one host's deploy lifecycle (lock, upload, build, migrate, start, health, switch, stop the old,
  prune, clean up).
- ``lease.py``: the deploy lock's lease, renewed from a thread of its own while a host deploys.
- ``interrupt.py``: Ctrl-C and SIGTERM handled like a failure; the fault tests' pause hook.
- ``session.py``: one host's SSH session: steps, and the host agent's JSON answers.
- ``layout.py``: paths on a host, the release, the shared environment file (pure).
- ``hosts.py``: parsing host names, connecting, checking host keys.
- ``upload.py``: which files a release holds, and sending them.
- ``wheels.py``: wheels for hosts without a package index.

What runs on the host itself is in :mod:`warptasks.scripts` (``agent.py``).
"""
