"""Engine, image and SSH-host fixtures from the test harness."""

from tests.harness.fixtures import *  # noqa: F403
