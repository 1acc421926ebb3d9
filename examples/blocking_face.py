"""suricate from a threaded program: 16 threads share one runtime.

Run it with ``python examples/blocking_face.py``.
"""

from __future__ import annotations

import sys
import threading

import suricate
import suricate.blocking


def agent(turn: suricate.Turn) -> suricate.TurnResult:
    """A blocking executor: runs on its own thread, never on the runtime's."""
    payload = turn.inputs[0].payload
    return suricate.TurnResult(result=f"{payload['worker']}:{payload['n']} done")


def main() -> int:
    with suricate.blocking.open_runtime() as rt:
        s = rt.open_session("shared")
        s.attach(agent)
        results: list[suricate.Outcome] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            for n in range(25):
                outcome = s.ask({"worker": k, "n": n}, idempotency_key=f"{k}-{n}", timeout=30)
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        completed = [r for r in results if isinstance(r, suricate.Completed)]
        distinct = {r.input_id for r in completed}
        print(f"{len(completed)} inputs completed by 16 threads, {len(distinct)} distinct")
        return 0 if len(completed) == len(distinct) == 400 else 1


if __name__ == "__main__":
    sys.exit(main())
