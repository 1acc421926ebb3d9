"""Supervision: restart policies and the supervised executor loop.

``Backoff``, ``Restart``, ``RestartPolicy``, ``Strategy`` and
``ThreadExecutor`` have their public home in ``suricate``; they stay
importable from here too.
"""

from .._exports import fix_module_metadata
from ._loop import ExecutorLoop, LoopOptions
from ._policy import (  # noqa: F401 (Backoff ... Strategy: importable from here too)
    Backoff,
    Restart,
    RestartPolicy,
    Strategy,
    may_restart,
    next_delay,
    restarts_in_window,
)
from ._supervisor import ChildSpec, Supervisor, SupervisorGaveUp
from ._thread import ThreadExecutor  # noqa: F401

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
