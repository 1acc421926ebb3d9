"""Every public argument is checked before anything is looked up or persisted
(issue 13): identifiers UTF-8 can encode, typed timeouts and runtime options,
no unknown keywords, and the one rule for ephemeral keys and supersession.

Tests taking ``rt`` or ``store`` run on the MemoryStore and on SQLite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import suricate
from suricate import (
    Accepted,
    Deduplicated,
    Durability,
    Input,
    InputRejected,
    InputState,
    Superseded,
)
from suricate._model._session import RECENT_EPHEMERAL
from suricate.testing import FaultyStore

LONE = "x\ud800"
"""A lone surrogate: a valid Python ``str`` that UTF-8 cannot encode."""

BAD_TIMEOUTS = [-1, -0.5, math.nan, math.inf, -math.inf, "1", True, [1]]


async def _queued(s: suricate.Session) -> int:
    return (await s.stats()).inputs["queued"]


# -- identifiers UTF-8 can encode ----------------------------------------------------


async def test_a_session_id_with_a_lone_surrogate_is_rejected_before_any_lookup(rt) -> None:
    with pytest.raises(InputRejected, match="UTF-8"):
        await rt.open_session(LONE)
    with pytest.raises(InputRejected, match="UTF-8"):
        rt.session(LONE)
    with pytest.raises(InputRejected, match="UTF-8"):
        rt.events(session_id=LONE)
    assert rt.sessions() == []


@pytest.mark.parametrize(
    "field", ["idempotency_key", "kind", "supersession_key", "correlation_id"]
)
async def test_an_identifier_with_a_lone_surrogate_is_rejected_and_nothing_is_stored(
    rt, field: str
) -> None:
    with pytest.raises(InputRejected, match="UTF-8"):
        Input({"a": 1}, **{field: LONE})
    s = await rt.open_session("s")
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.submit({"a": 1}, **{field: LONE})
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.submit(Input({"a": 1}), **{field: LONE})
    assert await _queued(s) == 0
    ack = await s.submit({"a": 1}, **{field: "fine-\u00e9"})  # the store still works
    assert isinstance(ack, Accepted)


@pytest.mark.parametrize(
    "fields",
    [
        {"payload": {"text": LONE}},
        {"payload": {LONE: 1}},
        {"payload": [1, [LONE]]},
        {"payload": 1, "metadata": {LONE: 1}},
        {"payload": 1, "metadata": {"k": LONE}},
    ],
    ids=["payload-string", "payload-key", "nested", "metadata-key", "metadata-value"],
)
async def test_a_payload_or_metadata_with_a_lone_surrogate_is_rejected(
    rt, fields: dict[str, Any]
) -> None:
    s = await rt.open_session("s")
    fields = dict(fields)
    payload = fields.pop("payload")
    with pytest.raises(InputRejected):
        await s.submit(payload, **fields)
    assert await _queued(s) == 0


async def test_reads_by_an_id_with_a_lone_surrogate_are_rejected(rt) -> None:
    s = await rt.open_session("s")
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.wait(LONE)
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.input(LONE)
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.receipt(LONE, 1)
    with pytest.raises(InputRejected, match="UTF-8"):
        await s.ask({"a": 1}, idempotency_key=LONE, timeout=1)
    assert await _queued(s) == 0


# -- timeouts and arguments ----------------------------------------------------------


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
async def test_ask_with_a_bad_timeout_submits_nothing(rt, timeout: Any) -> None:
    s = await rt.open_session("s")
    with pytest.raises(InputRejected, match="timeout"):
        await s.ask({"a": 1}, timeout=timeout)
    assert await _queued(s) == 0


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
async def test_wait_with_a_bad_timeout_is_rejected(rt, timeout: Any) -> None:
    s = await rt.open_session("s")
    ack = await s.submit({"a": 1})
    with pytest.raises(InputRejected, match="timeout"):
        await s.wait(ack.input_id, timeout=timeout)
    assert (await rt.stats()).waiters == 0


@pytest.mark.parametrize("timeout", [0, 0.0, 0.01], ids=repr)
async def test_a_finite_timeout_of_either_number_type_is_a_timeout(rt, timeout: Any) -> None:
    s = await rt.open_session("s")
    ack = await s.submit({"a": 1})
    with pytest.raises(suricate.WaitTimeout):
        await s.wait(ack.input_id, timeout=timeout)
    with pytest.raises(suricate.WaitTimeout):
        await s.ask({"a": 2}, timeout=timeout)


async def test_input_id_and_unknown_keywords_given_to_submit_are_rejected(rt) -> None:
    s = await rt.open_session("s")
    with pytest.raises(InputRejected, match="input_id"):
        await s.submit({"a": 1}, input_id="mine")
    with pytest.raises(InputRejected, match="input_id"):
        await s.submit(Input({"a": 1}), input_id="mine")
    with pytest.raises(InputRejected, match="input_id"):
        await s.ask({"a": 1}, input_id="mine", timeout=1)
    with pytest.raises(InputRejected):
        await s.submit({"a": 1}, no_such_field=1)
    with pytest.raises(InputRejected):
        await s.submit(Input({"a": 1}), no_such_field=1)
    with pytest.raises(InputRejected):
        await s.ask({"a": 1}, no_such_field=1, timeout=1)
    assert await _queued(s) == 0


async def test_other_session_arguments_are_typed(rt) -> None:
    s = await rt.open_session("s")
    with pytest.raises(InputRejected):
        await s.wait(1)  # type: ignore[arg-type]
    with pytest.raises(InputRejected):
        await s.input(None)  # type: ignore[arg-type]
    with pytest.raises(InputRejected, match="sequence"):
        await s.receipt("run", "1")  # type: ignore[arg-type]
    with pytest.raises(InputRejected, match="cancel"):
        await s.detach(cancel="yes")  # type: ignore[arg-type]
    with pytest.raises(InputRejected, match="idle_timeout"):
        s.drain_from(lambda: _nothing(), idle_timeout="10")  # type: ignore[arg-type]
    with pytest.raises(InputRejected, match="idle_timeout"):
        s.drain_from(lambda: _nothing(), idle_timeout=math.nan)
    with pytest.raises(InputRejected, match="name"):
        s.drain_from(lambda: _nothing(), name=LONE)
    with pytest.raises(InputRejected, match="restart"):
        s.drain_from(lambda: _nothing(), restart="always")  # type: ignore[arg-type]
    with pytest.raises(InputRejected, match="kinds"):
        rt.events(kinds="input.accepted")
    with pytest.raises(InputRejected):
        rt.events(kinds=[1])  # type: ignore[list-item]


async def _nothing() -> Any:  # pragma: no cover - never iterated
    if False:
        yield None


@pytest.mark.parametrize(
    "options",
    [
        {"event_buffer": -1},
        {"event_buffer": 0},
        {"event_buffer": "x"},
        {"event_buffer": 2.5},
        {"event_buffer": True},
        {"shutdown_grace": math.nan},
        {"shutdown_grace": math.inf},
        {"shutdown_grace": -1},
        {"shutdown_grace": "x"},
        {"shutdown_grace": True},
        {"max_payload_bytes": True},
        {"max_payload_bytes": 1.5},
        {"max_payload_bytes": "1"},
        {"max_queued": False},
        {"max_queued": 10.0},
        {"max_queued": "10"},
        {"max_attempts": True},
        {"max_attempts": 3.0},
        {"max_attempts": "3"},
        {"seed": "abc"},
        {"seed": 1.5},
        {"seed": True},
        {"id_factory": "ids"},
    ],
    ids=lambda o: ",".join(f"{k}={v!r}" for k, v in o.items()),
)
async def test_bad_runtime_options_are_rejected_before_anything_opens(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "agent.db"
    with pytest.raises(InputRejected):
        async with suricate.open_runtime(path, **options):
            pytest.fail("the body ran")
    assert list(tmp_path.iterdir()) == []


# -- ephemeral inputs ----------------------------------------------------------------


async def test_an_ephemeral_key_is_forgotten_with_its_record(rt) -> None:
    s = await rt.open_session("s")
    first = await s.submit({"n": 0}, idempotency_key="k", durability="ephemeral")
    await s.reset()  # terminal: remembered among the recent ephemeral inputs
    again = await s.submit({"n": 0}, idempotency_key="k", durability="ephemeral")
    assert again == Deduplicated(input_id=first.input_id, existing_input_id=first.input_id)
    for n in range(RECENT_EPHEMERAL):
        await s.submit({"n": n}, durability="ephemeral")
    await s.reset()
    assert await s.input(first.input_id) is None  # evicted: its key went with it
    ack = await s.submit({"n": 0}, idempotency_key="k", durability="ephemeral")
    assert isinstance(ack, Accepted) and ack.input_id != first.input_id
    assert (await s.input(ack.input_id)).state is InputState.QUEUED
    await s.reset()
    assert (await s.wait(ack.input_id, timeout=1)).input_id == ack.input_id


async def test_every_deduplicated_ack_names_an_input_that_wait_knows(rt) -> None:
    s = await rt.open_session("s")
    for n in range(RECENT_EPHEMERAL + 300):
        key = "again" if n % 100 == 0 else f"once-{n}"
        ack = await s.submit({"n": n}, idempotency_key=key, durability="ephemeral")
        assert await s.input(ack.input_id) is not None, n
        if n % 50 == 0:
            await s.reset()


async def test_a_durable_input_is_not_deduplicated_against_an_ephemeral_one(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        eph = await s.submit({"e": 1}, idempotency_key="k", durability="ephemeral")
        durable = await s.submit({"d": 1}, idempotency_key="k")
        assert isinstance(durable, Accepted) and durable.input_id != eph.input_id
        # The key now names the durable input, for either class.
        for durability in ("durable", "ephemeral"):
            again = await s.submit({"x": 1}, idempotency_key="k", durability=durability)
            assert again == Deduplicated(
                input_id=durable.input_id, existing_input_id=durable.input_id
            )
        await s.reset()  # the ephemeral one finishes: it does not take the key back
        again = await s.submit({"x": 1}, idempotency_key="k")
        assert again.input_id == durable.input_id
    async with suricate.open_runtime(store_factory(), id_factory=ids) as rt:
        s = await rt.open_session("s")
        again = await s.submit({"x": 1}, idempotency_key="k")
        assert again.input_id == durable.input_id
        assert (await s.wait(durable.input_id, timeout=1)).input_id == durable.input_id


async def test_an_ephemeral_input_never_supersedes_a_durable_one(rt) -> None:
    s = await rt.open_session("s")
    durable = await s.submit({"d": 1}, kind="status", supersession_key="x")
    eph = await s.submit({"e": 1}, kind="status", supersession_key="x", durability="ephemeral")
    assert (await s.input(durable.input_id)).state is InputState.QUEUED
    stored = await rt.store.load_input("s", durable.input_id)
    assert stored.state is InputState.QUEUED and stored.superseded_by is None
    # and a durable one never supersedes an ephemeral one
    newer = await s.submit({"d": 2}, kind="status", supersession_key="x")
    assert (await s.input(eph.input_id)).state is InputState.QUEUED
    assert await s.wait(durable.input_id, timeout=1) == Superseded(
        input_id=durable.input_id, by=newer.input_id
    )
    # within one class supersession works as before
    eph2 = await s.submit({"e": 2}, kind="status", supersession_key="x", durability="ephemeral")
    assert await s.wait(eph.input_id, timeout=1) == Superseded(
        input_id=eph.input_id, by=eph2.input_id
    )
    assert (await s.input(newer.input_id)).state is InputState.QUEUED
    assert (await rt.store.load_input("s", newer.input_id)).state is InputState.QUEUED
    assert await rt.store.load_input("s", eph2.input_id) is None


async def test_an_ephemeral_submit_writes_nothing_even_with_a_supersession_key(
    store_factory: Callable[[], suricate.Store], ids: Callable[[], str]
) -> None:
    faulty = FaultyStore(store_factory())
    async with suricate.open_runtime(faulty, id_factory=ids) as rt:
        s = await rt.open_session("s")
        durable = await s.submit({"d": 1}, kind="status", supersession_key="x")
        disarm = faulty.fail_commit_if(lambda write_set: True)  # any write would fail
        ack = await s.submit(
            {"e": 1}, kind="status", supersession_key="x", durability=Durability.EPHEMERAL
        )
        assert isinstance(ack, Accepted)
        disarm()
        assert (await s.input(durable.input_id)).state is InputState.QUEUED


async def test_an_event_subscription_entered_after_the_runtime_closed_ends_at_once() -> None:
    async with suricate.open_runtime() as rt:
        pass
    with trio.fail_after(5):
        async with rt.events() as events:
            assert [e async for e in events] == []
        assert [e async for e in rt.events(kinds={"input.accepted"})] == []
