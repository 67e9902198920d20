"""Running plans: the one executor, and the local target.

- ``executor.py``: runs a plan's steps through a runner ``c`` (an invoke
  ``Context`` locally, a fabric ``Connection`` on a host), reads a target's
  facts through the probe, runs the checks before a start.
- ``local.py``: build, plan and start on this machine.
"""
