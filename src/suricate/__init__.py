"""suricate: an embeddable, trio-native actor runtime for long-running agent daemons.

Every agent session is an actor whose mailbox serializes its mutations; an
executor loop, supervised by a restart policy, runs its turns; a completion
registry lets callers await outcomes; a store makes it all durable.

    async with suricate.open_runtime() as rt:
        s = await rt.open_session("alice")
        await s.attach(executor)
        outcome = await s.ask({"text": "hi"})
"""

from . import _exports
from ._errors import (
    ActorStopped,
    IllegalTransition,
    InputNotFound,
    InputRejected,
    NotReady,
    Overloaded,
    RecoveryCorruption,
    RuntimeClosed,
    RuntimeCrashed,
    SessionDestroyed,
    SessionNotFound,
    StoreError,
    StoreLocked,
    SuricateError,
    TerminalError,
    WaitTimeout,
)
from ._events import Event
from ._model import (
    AbandonReason,
    Abandoned,
    Accepted,
    Completed,
    Deduplicated,
    DestroyReport,
    Durability,
    Handling,
    Input,
    InputRecord,
    InputState,
    Outcome,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    SessionState,
    StopReport,
    Superseded,
)
from ._model import DeadLetter, Receipt
from ._turn import ExecutorExit, Fatal, PeerMessage, Turn, TurnResult
from .actors._session import SessionStats
from .runtime import (
    DrainExit,
    DrainMode,
    Runtime,
    RuntimeStats,
    Session,
    SourceDrain,
    open_runtime,
)
from .store._memory import MemoryStore
from .store._protocol import Store
from .supervision._policy import Backoff, GiveUp, Restart, RestartPolicy, Strategy
from .supervision._thread import ThreadExecutor

__all__ = [
    "AbandonReason",
    "Abandoned",
    "Accepted",
    "ActorStopped",
    "Backoff",
    "Completed",
    "Deduplicated",
    "DeadLetter",
    "DestroyReport",
    "DrainExit",
    "DrainMode",
    "Durability",
    "Event",
    "ExecutorExit",
    "Fatal",
    "GiveUp",
    "Handling",
    "IllegalTransition",
    "Input",
    "InputNotFound",
    "InputRecord",
    "InputRejected",
    "InputState",
    "MemoryStore",
    "NotReady",
    "Outcome",
    "Overloaded",
    "PeerMessage",
    "Receipt",
    "RecoveryCorruption",
    "RecoveryReport",
    "RecycleReport",
    "ResetReport",
    "Restart",
    "RestartPolicy",
    "RetireReport",
    "Runtime",
    "RuntimeClosed",
    "RuntimeCrashed",
    "RuntimeStats",
    "Session",
    "SessionDestroyed",
    "SessionNotFound",
    "SessionState",
    "SessionStats",
    "SourceDrain",
    "StopReport",
    "Store",
    "StoreError",
    "StoreLocked",
    "Strategy",
    "Superseded",
    "SuricateError",
    "TerminalError",
    "ThreadExecutor",
    "Turn",
    "TurnResult",
    "WaitTimeout",
    "open_runtime",
]

__version__ = "0.1.0"


_exports.fix_module_metadata(__name__, __all__, globals())

# A library prints nothing by itself: log records go to the application's
# handlers, if it configured any.
import logging as _logging

_logging.getLogger("suricate").addHandler(_logging.NullHandler())
del _logging
