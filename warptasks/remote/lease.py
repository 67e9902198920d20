"""The deploy lock's lease, renewed from a thread of its own for as long as a host's deploy holds the lock.

The agent's lock (see :func:`warptasks.scripts.agent.lock`) is a lease: it
holds for ``lease`` seconds unless renewed, so a deploy killed anywhere
(SIGKILL, a lost laptop) frees the host once its lease runs out, without
``--break-lock``. While the deploy lives, :class:`LeaseKeeper` renews it every
third of the lease over an SSH connection of its own, so a long build, a
slow health check or a drain on the deploy's connection never delays a
renewal. A renewal the agent refuses (another deploy holds the lock now), or
no renewal for a whole lease, is recorded in :attr:`LeaseKeeper.lost`: the
host's deploy fails at its next phase, and the agent refuses its switch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..settings import DeploySettings
from .hosts import HostTarget
from .session import LockLost, Session


class LeaseKeeper:
    """Renews one host's deploy lock (``token``'s) every ``lease / 3`` seconds until stopped or lost."""

    def __init__(self, target: HostTarget, settings: DeploySettings, config: Any, token: str, lease: float) -> None:
        self.target, self.settings, self.config = target, settings, config
        self.token, self.lease = token, float(lease)
        self.lost = ""  # why the lock is no longer this deploy's; "" while it is
        self._stop = threading.Event()
        self._session: Session | None = None
        self._thread = threading.Thread(target=self._run, name=f"warp lease {target.label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No renewal after this returns (a renewal in flight is waited for, briefly); the connection closed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._drop()

    def _run(self) -> None:
        held_until = time.monotonic() + self.lease
        last = ""
        while not self._stop.wait(self.lease / 3):
            try:
                self._renew()
                held_until = time.monotonic() + self.lease
            except LockLost as error:
                self.lost = f"the deploy lock is no longer this deploy's: {error}"
                return
            except Exception as error:  # noqa: BLE001 - a dropped connection: try again over a new one
                last = f"{type(error).__name__}: {error}"
                self._drop()
            if time.monotonic() >= held_until and not self._stop.is_set():
                self.lost = f"the deploy lock could not be renewed for {self.lease:.0f}s, its lease ({last})"
                return

    def _renew(self) -> None:
        if self._session is None:
            session = Session(self.target, self.settings)
            session.open(self.config)
            self._session = session
        self._session.agent("renew", token=self.token, lease=self.lease)

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing a connection that is gone already
                pass
