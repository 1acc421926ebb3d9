"""Actors: the kernel's public face, and the runtime's own actors.

:class:`Actor`, :class:`ActorRef` and :func:`spawn` (defined in the leaf
package ``suricate._kernel``) are public here, for applications that host
actors of their own next to their sessions.  The session actor, the
completion registry and the comms drains are the runtime's internals.
"""

from .._exports import fix_module_metadata
from .._kernel import Actor, ActorRef, ActorStatistics, spawn

__all__ = ["Actor", "ActorRef", "ActorStatistics", "spawn"]

fix_module_metadata(__name__, __all__, globals())
