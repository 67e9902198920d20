"""Planning: what will run, as data. Nothing here touches the system.

An :class:`~warptasks.detect.AppSpec` and facts about the target go in; a
:class:`Plan` of :class:`Step` (argv, cwd, env, why) comes out. The same
plans run on this machine, inside an image and on remote hosts.
"""

from ..servers import resolve_server
from .build import BuildOptions, plan_build
from .environment import env_paths, hook_environment, plan_command, plan_exec, untracked_dirs
from .processes import plan_process, plan_release, procfile_argv
from .start import StartOptions, StartPlan, plan_start
from .steps import MASKED, Plan, Step, command_line, masked_env, write_file

__all__ = [
    "MASKED",
    "BuildOptions",
    "Plan",
    "StartOptions",
    "StartPlan",
    "Step",
    "command_line",
    "env_paths",
    "hook_environment",
    "masked_env",
    "plan_build",
    "plan_command",
    "plan_exec",
    "plan_process",
    "plan_release",
    "plan_start",
    "procfile_argv",
    "resolve_server",
    "untracked_dirs",
    "write_file",
]
