"""The actor kernel and the one trio<->pykka bridge.

A leaf package: it imports nothing of the runtime above it (sessions, store,
supervision), so every layer can build on it.  ``suricate.actors`` is the
public home of :class:`Actor`, :class:`ActorRef` and :func:`spawn`.
"""

from ._actor import Actor, ActorRef, ActorStatistics, spawn
from ._bridge import ThreadHost, call_in_thread, call_on_host

__all__ = [
    "Actor",
    "ActorRef",
    "ActorStatistics",
    "ThreadHost",
    "call_in_thread",
    "call_on_host",
    "spawn",
]
