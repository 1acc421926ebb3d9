"""Supervision: restart policies and the supervised executor loop."""

from ._loop import (
    RUNNING_SESSION,
    CheckpointTurn,
    ExecutorCrashed,
    ExecutorLoop,
    GiveUp,
    LoopExited,
    LoopOptions,
    LoopReady,
    TurnEnd,
    TurnReport,
    TurnStart,
    TurnTimeout,
)
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
from ._thread import ThreadExecutor, as_executor

__all__ = [
    "RUNNING_SESSION",
    "Backoff",
    "CheckpointTurn",
    "ChildSpec",
    "ExecutorCrashed",
    "ExecutorLoop",
    "GiveUp",
    "LoopExited",
    "LoopOptions",
    "LoopReady",
    "Restart",
    "RestartPolicy",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "ThreadExecutor",
    "TurnEnd",
    "TurnReport",
    "TurnStart",
    "TurnTimeout",
    "as_executor",
    "may_restart",
    "next_delay",
    "restarts_in_window",
]
