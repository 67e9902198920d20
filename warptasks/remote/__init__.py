"""The hosts target: the same build and start on remote hosts over SSH (fabric).

- ``deploy.py``: deploy, status and rollback across hosts.
- ``hosts.py``: parsing host names, connecting, checking host keys.
- ``upload.py``: which files a release holds, and sending them.
- ``wheels.py``: wheels for hosts without a package index.

What runs on the host itself is in :mod:`warptasks.scripts` (``agent.py``).
"""
