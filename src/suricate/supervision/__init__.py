"""Supervision: restart policies and the supervised executor loop."""

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
    "Backoff",
    "ChildSpec",
    "ExecutorLoop",
    "LoopOptions",
    "Restart",
    "RestartPolicy",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "ThreadExecutor",
    "may_restart",
    "next_delay",
    "restarts_in_window",
]
