"""Supervision: restart policies and the supervised executor loop."""

from .._exports import fix_module_metadata
from ._loop import ExecutorLoop, LoopOptions
from ._policy import (
    Backoff,
    Restart,
    RestartPolicy,
    Strategy,
    may_restart,
    next_delay,
    restarts_in_window,
)
from ._supervisor import ChildSpec, Supervisor, SupervisorGaveUp
from ._thread import ThreadExecutor

__all__ = [
    "ChildSpec",
    "ExecutorLoop",
    "LoopOptions",
    "Supervisor",
    "SupervisorGaveUp",
    "may_restart",
    "next_delay",
    "restarts_in_window",
]

fix_module_metadata(__name__, __all__, globals())
