"""The actor kernel and the runtime's actors."""

from .._kernel import Actor, ActorRef, ActorStatistics, spawn
from ._registry import CompletionRegistry, Waiter
from ._session import SessionActor, SessionStats

__all__ = [
    "Actor",
    "ActorRef",
    "ActorStatistics",
    "CompletionRegistry",
    "SessionActor",
    "SessionStats",
    "Waiter",
    "spawn",
]
