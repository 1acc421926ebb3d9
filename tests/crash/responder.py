"""A peer request left in flight by a killed responder (the recovery-replies tests).

Usage: python responder.py DB MODE

``alice`` sends ``PeerMessage("bob", ..., reply=True, correlation_id="q-1")``
from one turn.  ``bob``'s executor then, by MODE:

- ``last_attempt``: fails every attempt but the last; on the last one the
  request is durably ``STAGED`` with ``attempt == max_attempts``;
- ``applied``: commits a boundary (``checkpoint`` with a result), so the
  request is durably ``APPLIED`` with its receipt;

and prints ``stuck <request input id>`` and blocks, waiting for SIGKILL.
"""

from __future__ import annotations

import sys

import trio

import suricate

CORRELATION = "q-1"
PARTIAL = {"partial": True}


def main() -> None:
    db, mode = sys.argv[1], sys.argv[2]

    async def alice(turn: suricate.Turn) -> suricate.TurnResult:
        return suricate.TurnResult(
            result="asked",
            messages=[
                suricate.PeerMessage("bob", {"q": 42}, reply=True, correlation_id=CORRELATION)
            ],
        )

    async def bob(turn: suricate.Turn) -> suricate.TurnResult:
        (request,) = turn.inputs
        if mode == "last_attempt":
            if turn.attempt < 3:
                raise RuntimeError(f"flaky responder, attempt {turn.attempt}")
        else:
            await turn.checkpoint(results={request.input_id: PARTIAL})
        print("stuck", request.input_id, flush=True)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def run() -> None:
        async with suricate.open_runtime(db, max_attempts=3) as rt:
            a = await rt.open_session("alice")
            b = await rt.open_session("bob")
            await b.attach(bob, retry=None)
            await a.attach(alice)
            await a.submit("start")
            await trio.sleep_forever()

    trio.run(run)


if __name__ == "__main__":
    main()
