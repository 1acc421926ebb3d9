"""The pure session model (``suricate._model``): lifecycle tables, input
validation, the session reducer and recovery.  Synchronous: no trio, no store.

A "committed" step is simulated by calling ``core.apply(step)``; a refused
decision must raise before returning a step and leave the core as it was.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import suricate
from suricate import (
    AbandonReason,
    Abandoned,
    Accepted,
    Deduplicated,
    DestroyReport,
    Durability,
    Handling,
    IllegalTransition,
    Input,
    InputRejected,
    InputState,
    NotReady,
    Overloaded,
    RecoveryCorruption,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    SessionDestroyed,
    SessionState,
    StopReport,
    Superseded,
)
from suricate._model import (
    INPUT_TRANSITIONS,
    SESSION_RULES,
    Effect,
    InputEvent,
    InputRecord,
    Limits,
    Rule,
    SessionCore,
    SessionOp,
    SessionRecord,
    Step,
    StoredSession,
    check_session_id,
    next_input_state,
    recover_step,
    session_rule,
)

Q, S, A = InputState.QUEUED, InputState.STAGED, InputState.APPLIED
CONSUMED, SUPERSEDED, ABANDONED = InputState.CONSUMED, InputState.SUPERSEDED, InputState.ABANDONED
I, AT, R, RT, ST, D = (
    SessionState.IDLE,
    SessionState.ATTACHED,
    SessionState.RUNNING,
    SessionState.RETIRED,
    SessionState.STOPPED,
    SessionState.DESTROYED,
)
E = InputEvent
Op = SessionOp


# -- helpers ----------------------------------------------------------------------

_ids = itertools.count(1)


def new_core(**limits: Any) -> SessionCore:
    return SessionCore(StoredSession(record=SessionRecord(session_id="s")), Limits(**limits))


def submit(core: SessionCore, payload: Any = "p", *, internal: bool = False, **fields: Any) -> str:
    """Submit and adopt (as if committed); the new or existing input id."""
    step = core.submit(
        Input(payload, **fields), input_id=f"in-{next(_ids)}", now=1.0, internal=internal
    )
    core.apply(step)
    assert isinstance(step.reply, (Accepted, Deduplicated))
    return step.reply.input_id


def operate(core: SessionCore, op: SessionOp) -> Step:
    step = core.operate(op, now=2.0)
    core.apply(step)
    return step


def take(core: SessionCore, run_id: str, *, max_batch: int = 1) -> Step:
    step = core.take_turn(run_id=run_id, now=3.0, max_batch=max_batch)
    core.apply(step)
    return step


def stored_copy(core: SessionCore) -> StoredSession:
    """What a store would hand back for ``core`` (its durable state)."""
    return StoredSession(
        record=core.record,
        snapshot_json=core.snapshot_json,
        snapshot_revision=core.revision,
        inputs=tuple(sorted(core.active.values(), key=lambda r: r.order)),
        idempotency=dict(core.keys),
    )


def fingerprint(core: SessionCore) -> tuple[Any, ...]:
    """Everything observable about a core, to prove that nothing changed."""
    return (
        core.state,
        core.record,
        core.attached,
        core.run,
        dict(core.active),
        dict(core.keys),
        dict(core.supersession),
        [r.input_id for r in core.queued()],
        core.snapshot_json,
        core.revision,
        dict(core.recent),
    )


def record(
    input_id: str,
    state: InputState,
    *,
    order: int,
    attempt: int = 0,
    run_id: str | None = None,
    boundary: int | None = None,
    payload_json: str = '"p"',
    version: int = 1,
) -> InputRecord:
    return InputRecord(
        session_id="s",
        input_id=input_id,
        seq=order,
        order=order,
        kind="prompt",
        payload_json=payload_json,
        durability=Durability.DURABLE,
        handling=Handling.QUEUE,
        state=state,
        attempt=attempt,
        run_id=run_id,
        boundary=boundary,
        version=version,
    )


# -- 1. the input lifecycle table (DESIGN section 4) --------------------------------

#: DESIGN section 4, row by row.
DESIGN_INPUT_TRANSITIONS = {
    (Q, E.SUPERSEDE): SUPERSEDED,
    (Q, E.STAGE): S,
    (S, E.CHECKPOINT): A,
    (S, E.COMMIT): CONSUMED,
    (A, E.COMMIT): CONSUMED,
    (A, E.FAIL_RETRY): CONSUMED,
    (A, E.FAIL_FINAL): CONSUMED,
    (A, E.INTERRUPT): CONSUMED,
    (S, E.FAIL_TERMINAL): ABANDONED,
    (A, E.FAIL_TERMINAL): CONSUMED,
    (S, E.FAIL_RETRY): Q,
    (S, E.FAIL_FINAL): ABANDONED,
    (S, E.INTERRUPT): Q,
    (Q, E.ABANDON): ABANDONED,
    (S, E.ABANDON): ABANDONED,
    (A, E.ABANDON): ABANDONED,
    (ABANDONED, E.RETRY): Q,
}

ALL_INPUT_PAIRS = [(s, e) for s in InputState for e in InputEvent]


def test_input_transition_table_is_exactly_the_design_table() -> None:
    assert dict(INPUT_TRANSITIONS) == DESIGN_INPUT_TRANSITIONS


@pytest.mark.parametrize(
    ("state", "event"), ALL_INPUT_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_INPUT_PAIRS]
)
def test_next_input_state_follows_the_table_or_raises_illegal_transition(
    state: InputState, event: InputEvent
) -> None:
    if (state, event) in DESIGN_INPUT_TRANSITIONS:
        assert next_input_state(state, event) is DESIGN_INPUT_TRANSITIONS[state, event]
    else:
        with pytest.raises(IllegalTransition) as info:
            next_input_state(state, event)
        assert info.value.state is state
        assert info.value.event is event
        assert isinstance(info.value, suricate.SuricateError)


@pytest.mark.parametrize("state", [CONSUMED, SUPERSEDED, ABANDONED])
def test_terminal_input_states_accept_no_event_but_an_explicit_retry(state: InputState) -> None:
    assert state.terminal
    allowed = [e for (s, e) in INPUT_TRANSITIONS if s is state]
    assert allowed == ([E.RETRY] if state is ABANDONED else [])


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (Q, E.SUPERSEDE, SUPERSEDED),
        (S, E.FAIL_RETRY, Q),
        (S, E.FAIL_FINAL, ABANDONED),
        (A, E.FAIL_RETRY, CONSUMED),
        (A, E.FAIL_FINAL, CONSUMED),
        (S, E.INTERRUPT, Q),
    ],
)
def test_design_rows_that_are_easy_to_get_wrong(
    state: InputState, event: InputEvent, expected: InputState
) -> None:
    assert next_input_state(state, event) is expected


def test_an_illegal_input_event_in_the_reducer_changes_nothing() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    take(core, "r1")
    core.apply(core.commit_turn("r1", now=4.0))
    before = fingerprint(core)
    # The run is over: failing it again would move a CONSUMED input.
    with pytest.raises(NotReady):
        core.fail_turn("r1", error="late", now=5.0)
    assert fingerprint(core) == before


# -- 2. the session lifecycle table (DESIGN section 5) ------------------------------

OK = None
NR = NotReady
SD = SessionDestroyed
STATES = [I, AT, R, RT, ST, D]

#: DESIGN section 5: which operations are refused, and with which error.
#: Columns are IDLE, ATTACHED, RUNNING, RETIRED, STOPPED, DESTROYED.
DESIGN_REFUSALS: dict[SessionOp, tuple[type[Exception] | None, ...]] = {
    Op.SUBMIT: (OK, OK, OK, NR, NR, SD),
    Op.ATTACH: (OK, NR, NR, OK, OK, SD),
    Op.DETACH: (OK, OK, OK, OK, OK, SD),
    Op.RETIRE: (OK, OK, OK, OK, OK, SD),
    Op.RESET: (OK, OK, NR, OK, NR, SD),
    Op.RECYCLE: (OK, OK, NR, OK, OK, SD),
    Op.STOP: (OK, OK, OK, OK, OK, SD),
    Op.DESTROY: (OK, OK, OK, OK, OK, OK),
    Op.RECOVER: (OK, OK, NR, OK, OK, OK),
}


def design_refusal(state: SessionState, op: SessionOp) -> type[Exception] | None:
    return DESIGN_REFUSALS[op][STATES.index(state)]


def _rule(**kw: Any) -> Rule:
    return Rule(**kw)


_retire = _rule(to=RT, effect=Effect.ABANDON_IF_DETACHED, reason=AbandonReason.RETIRED)
_reset = _rule(to=I, effect=Effect.ABANDON, reason=AbandonReason.RESET)
_stop = _rule(
    to=ST, attached=False, effect=Effect.ABANDON, reason=AbandonReason.STOPPED, cancel_run=True
)
_destroy = _rule(
    to=D, attached=False, effect=Effect.ABANDON, reason=AbandonReason.DESTROYED, cancel_run=True
)
_nop = _rule()

#: DESIGN section 5 for the allowed pairs: persisted target state (ATTACHED and
#: RUNNING persist as IDLE), attachment, effect on the inputs.
DESIGN_ALLOWED_RULES: dict[tuple[SessionState, SessionOp], Rule] = {
    **{(s, Op.SUBMIT): _nop for s in (I, AT, R)},
    (I, Op.ATTACH): _rule(attached=True),
    (RT, Op.ATTACH): _rule(attached=True),  # stays RETIRED, drains
    (ST, Op.ATTACH): _rule(to=I, attached=True),  # revived: ATTACHED, persisted IDLE
    (I, Op.DETACH): _nop,
    (AT, Op.DETACH): _rule(attached=False),
    (R, Op.DETACH): _rule(attached=False),
    (RT, Op.DETACH): _rule(attached=False),
    (ST, Op.DETACH): _nop,
    **{(s, Op.RETIRE): _retire for s in (I, AT, R, ST)},
    (RT, Op.RETIRE): _nop,
    **{(s, Op.RESET): _reset for s in (I, AT, RT)},
    **{(s, Op.RECYCLE): _rule(effect=Effect.RELOAD) for s in (I, AT, RT, ST)},
    **{(s, Op.STOP): _stop for s in (I, AT, R, RT)},
    (ST, Op.STOP): _nop,
    **{(s, Op.DESTROY): _destroy for s in (I, AT, R, RT, ST)},
    (D, Op.DESTROY): _nop,
    **{(s, Op.RECOVER): _rule(effect=Effect.RECOVER) for s in (I, AT, RT, ST)},
    (D, Op.RECOVER): _rule(effect=Effect.REPORT_ONLY),
}

ALL_SESSION_PAIRS = [(s, op) for s in STATES for op in SessionOp]
PAIR_IDS = [f"{s.name}-{op.name}" for s, op in ALL_SESSION_PAIRS]


def test_session_rules_cover_every_state_and_operation() -> None:
    assert set(SESSION_RULES) == set(ALL_SESSION_PAIRS)


@pytest.mark.parametrize(("state", "op"), ALL_SESSION_PAIRS, ids=PAIR_IDS)
def test_session_rule_matches_the_design_table(state: SessionState, op: SessionOp) -> None:
    rule = session_rule(state, op)
    assert rule is SESSION_RULES[state, op]
    refusal = design_refusal(state, op)
    assert rule.refuse is refusal
    assert rule.allowed is (refusal is None)
    if refusal is None:
        assert rule == DESIGN_ALLOWED_RULES[state, op]
    else:
        assert (state, op) not in DESIGN_ALLOWED_RULES


# A real core in each state.  Each has a non-terminal input where the state
# allows one, so that abandonment is observable.


def core_idle() -> SessionCore:
    core = new_core()
    submit(core, "a")
    return core


def core_attached() -> SessionCore:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core, "a")
    return core


def core_running() -> SessionCore:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core, "a")
    submit(core, "b")
    take(core, "r1")
    return core


def core_retired() -> SessionCore:
    """Retired with an executor, which then detached: one input pending drain."""
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core, "a")
    operate(core, Op.RETIRE)
    operate(core, Op.DETACH)
    return core


def core_stopped() -> SessionCore:
    core = core_idle()
    operate(core, Op.STOP)
    return core


def core_destroyed() -> SessionCore:
    core = core_idle()
    operate(core, Op.DESTROY)
    return core


BUILDERS: dict[SessionState, Callable[[], SessionCore]] = {
    I: core_idle,
    AT: core_attached,
    R: core_running,
    RT: core_retired,
    ST: core_stopped,
    D: core_destroyed,
}


@pytest.mark.parametrize("state", STATES, ids=[s.name for s in STATES])
def test_builders_reach_the_state_they_claim(state: SessionState) -> None:
    core = BUILDERS[state]()
    assert core.state is state
    assert core.record.state is (I if state in (AT, R) else state)
    assert core.attached is (state in (AT, R))
    assert (core.run is not None) is (state is R)
    expected_active = {I: 1, AT: 1, R: 2, RT: 1, ST: 0, D: 0}[state]
    assert len(core.active) == expected_active


def perform(core: SessionCore, op: SessionOp) -> Step:
    """Decide ``op`` on ``core`` through the entry point that serves it."""
    if op is Op.SUBMIT:
        return core.submit(Input("new"), input_id="fresh", now=5.0)
    if op is Op.RECYCLE:
        return core.recycle(stored_copy(core), now=5.0)
    if op is Op.RECOVER:
        return core.recover(stored_copy(core), now=5.0)
    return core.operate(op, now=5.0)


@pytest.mark.parametrize(
    ("state", "op"),
    [p for p in ALL_SESSION_PAIRS if design_refusal(*p) is not None],
    ids=[i for p, i in zip(ALL_SESSION_PAIRS, PAIR_IDS, strict=True) if design_refusal(*p) is not None],
)
def test_refused_operation_raises_its_typed_error_and_changes_nothing(
    state: SessionState, op: SessionOp
) -> None:
    core = BUILDERS[state]()
    before = fingerprint(core)
    error = design_refusal(state, op)
    assert error is not None
    with pytest.raises(error) as info:
        perform(core, op)
    if error is NotReady:
        assert info.value.state is state
    assert fingerprint(core) == before


#: What each allowed operation does to the cores above: the observable state
#: after it, and the abandon reason of their non-terminal inputs (None: kept).
DESIGN_EFFECTS: dict[tuple[SessionState, SessionOp], tuple[SessionState, AbandonReason | None]] = {
    (I, Op.SUBMIT): (I, None),
    (AT, Op.SUBMIT): (AT, None),
    (R, Op.SUBMIT): (R, None),
    (I, Op.ATTACH): (AT, None),
    (RT, Op.ATTACH): (RT, None),
    (ST, Op.ATTACH): (AT, None),
    (I, Op.DETACH): (I, None),
    (AT, Op.DETACH): (I, None),
    (R, Op.DETACH): (R, None),  # until the turn commits
    (RT, Op.DETACH): (RT, None),
    (ST, Op.DETACH): (ST, None),
    (I, Op.RETIRE): (RT, AbandonReason.RETIRED),
    (AT, Op.RETIRE): (RT, None),
    (R, Op.RETIRE): (RT, None),
    (RT, Op.RETIRE): (RT, None),
    (ST, Op.RETIRE): (RT, None),
    (I, Op.RESET): (I, AbandonReason.RESET),
    (AT, Op.RESET): (AT, AbandonReason.RESET),
    (RT, Op.RESET): (I, AbandonReason.RESET),
    **{(s, Op.RECYCLE): (s, None) for s in (I, AT, RT, ST)},
    **{(s, Op.STOP): (ST, AbandonReason.STOPPED) for s in (I, AT, R, RT)},
    (ST, Op.STOP): (ST, None),
    **{(s, Op.DESTROY): (D, AbandonReason.DESTROYED) for s in (I, AT, R, RT, ST)},
    (D, Op.DESTROY): (D, None),
    **{(s, Op.RECOVER): (s, None) for s in (I, AT, RT, ST, D)},
}

_REPORT = {
    Op.RETIRE: RetireReport,
    Op.RESET: ResetReport,
    Op.RECYCLE: RecycleReport,
    Op.STOP: StopReport,
    Op.DESTROY: DestroyReport,
    Op.RECOVER: RecoveryReport,
}


def test_design_effects_cover_exactly_the_allowed_pairs() -> None:
    allowed = {p for p in ALL_SESSION_PAIRS if design_refusal(*p) is None}
    assert set(DESIGN_EFFECTS) == allowed


@pytest.mark.parametrize(
    ("state", "op"),
    sorted(DESIGN_EFFECTS, key=lambda p: (STATES.index(p[0]), p[1].value)),
    ids=lambda p: p.name,
)
def test_allowed_operation_reaches_the_design_state_and_abandons_as_specified(
    state: SessionState, op: SessionOp
) -> None:
    core = BUILDERS[state]()
    active_before = dict(core.active)
    step = perform(core, op)
    core.apply(step)
    expected_state, reason = DESIGN_EFFECTS[state, op]
    assert core.state is expected_state
    assert core.record.state is (I if expected_state in (AT, R) else expected_state)
    abandoned = [r for r in step.records if r.state is ABANDONED]
    if reason is None:
        assert abandoned == []
        kept = set(active_before) | ({"fresh"} if op is Op.SUBMIT else set())
        assert set(core.active) == kept
    else:
        assert {r.input_id for r in abandoned} == set(active_before)
        assert all(r.reason is reason for r in abandoned)
        assert core.active == {}
    if op in _REPORT:
        assert isinstance(step.reply, _REPORT[op])
    if op in (Op.RESET, Op.STOP, Op.DESTROY):
        assert step.reply.inputs_abandoned == len(abandoned)
    if state is R and op in (Op.STOP, Op.DESTROY):
        assert step.cancel_run
        assert core.run is None
    if op is Op.SUBMIT:
        assert step.reply == Accepted(input_id="fresh")


def test_persisted_record_is_never_attached_or_running() -> None:
    for state in STATES:
        core = BUILDERS[state]()
        assert core.record.state in (I, RT, ST, D)
    with pytest.raises(ValueError):
        SessionRecord(session_id="s", state=R)
    with pytest.raises(ValueError):
        SessionRecord(session_id="s", state=AT)


def test_attach_to_a_retired_session_that_has_an_executor_is_refused_and_changes_nothing() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    operate(core, Op.RETIRE)
    assert core.state is RT and core.attached
    before = fingerprint(core)
    with pytest.raises(NotReady) as info:
        core.operate(Op.ATTACH, now=5.0)
    assert info.value.state is RT
    assert fingerprint(core) == before


def test_retire_with_an_executor_keeps_the_work_pending_drain_and_reports_it() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    ids = [submit(core, n) for n in range(3)]
    step = operate(core, Op.RETIRE)
    assert step.reply == RetireReport(inputs_abandoned=0, inputs_pending_drain=3)
    assert [r.input_id for r in core.queued()] == ids
    run = take(core, "r1").reply
    assert run.input_ids == (ids[0],)


def test_retire_without_executor_abandons_everything_and_reports_it() -> None:
    core = new_core()
    ids = [submit(core, n) for n in range(2)]
    step = operate(core, Op.RETIRE)
    assert step.reply == RetireReport(inputs_abandoned=2, inputs_pending_drain=0)
    assert [r.outcome() for r in step.records] == [
        Abandoned(input_id=i, reason=AbandonReason.RETIRED) for i in ids
    ]


def test_retire_of_a_retired_session_is_a_no_op_with_a_zero_report() -> None:
    # Regression: the repeated retire reported the pending inputs again.
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    operate(core, Op.RETIRE)
    before = fingerprint(core)
    step = operate(core, Op.RETIRE)
    assert fingerprint(core) == before
    assert step.reply == RetireReport()


def test_reset_keeps_the_snapshot_and_attachment() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    take(core, "r1")
    core.apply(core.commit_turn("r1", snapshot={"n": 1}, now=4.0))
    submit(core)
    step = operate(core, Op.RESET)
    assert step.reply == ResetReport(inputs_abandoned=1)
    assert core.state is AT
    assert core.snapshot_json == '{"n":1}'


def test_detach_while_running_waits_for_the_turn_and_then_is_idle() -> None:
    core = core_running()
    operate(core, Op.DETACH)
    assert core.state is R and not core.attached
    core.apply(core.commit_turn("r1", now=4.0))
    assert core.state is I
    # Detached: the remaining queued input does not start a turn.
    assert core.take_turn(run_id="r2", now=5.0) == Step()


def test_stop_records_the_reason_and_attach_revives_the_session() -> None:
    core = core_attached()
    core.apply(core.operate(Op.STOP, now=2.0, stop_reason="gave up"))
    assert core.state is ST and core.record.stop_reason == "gave up"
    operate(core, Op.ATTACH)
    assert core.state is AT and core.record.stop_reason is None


def test_stop_after_a_boundary_consumes_applied_inputs_and_does_not_report_them_abandoned() -> (
    None
):
    # Regression: the report counted every changed record, consumed ones too.
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    take(core, "r1")
    core.apply(core.checkpoint("r1", now=4.0))
    step = operate(core, Op.STOP)
    assert [r.state for r in step.records] == [CONSUMED]
    assert step.reply == StopReport(inputs_abandoned=0)


def core_retired_mid_turn() -> SessionCore:
    """Retired while its executor runs a turn: reads RETIRED, but a turn is in flight."""
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core, "running")
    submit(core, "queued")
    take(core, "r1")
    operate(core, Op.RETIRE)
    assert core.state is RT and core.run is not None
    return core


@pytest.mark.parametrize("op", [Op.RESET, Op.RECYCLE, Op.RECOVER], ids=lambda op: op.name)
def test_reset_recycle_and_recover_of_a_retired_session_mid_turn_are_refused_as_running(
    op: SessionOp,
) -> None:
    # Regression: reset used to abandon the turn's inputs without cancelling the
    # turn (commit_turn then raised KeyError); recover requeued them and forgot
    # the run, so they would run twice.
    core = core_retired_mid_turn()
    before = fingerprint(core)
    with pytest.raises(NotReady) as info:
        perform(core, op)
    assert info.value.state is R
    assert fingerprint(core) == before
    core.apply(core.commit_turn("r1", now=6.0))
    assert core.state is RT


def test_retire_after_detach_while_running_abandons_only_the_work_outside_the_turn() -> None:
    # Regression: the turn's staged input used to be abandoned under the running
    # turn, leaving core.run naming an input that had left core.active.
    core = core_running()
    queued = next(core.queued()).input_id
    operate(core, Op.DETACH)
    assert core.state is R and not core.attached
    step = operate(core, Op.RETIRE)
    assert [(r.input_id, r.state, r.reason) for r in step.records] == [
        (queued, ABANDONED, AbandonReason.RETIRED)
    ]
    assert step.reply == RetireReport(inputs_abandoned=1, inputs_pending_drain=1)
    assert core.run is not None and set(core.run.input_ids) <= set(core.active)
    commit = core.commit_turn("r1", now=6.0)
    assert [r.state for r in commit.records] == [CONSUMED]
    core.apply(commit)
    assert core.active == {} and core.state is RT


def test_recycle_reloads_from_the_store_keeping_queued_work() -> None:
    core = core_attached()
    stored = stored_copy(core)
    step = core.recycle(stored, now=5.0)
    assert step.reply == RecycleReport(inputs_transferred=1)
    core.apply(step)
    assert core.state is AT
    assert [r.input_id for r in core.queued()] == [r.input_id for r in stored.inputs]


def test_recycle_while_running_is_refused_and_changes_nothing() -> None:
    core = core_running()
    before = fingerprint(core)
    with pytest.raises(NotReady) as info:
        core.recycle(stored_copy(core), now=5.0)
    assert info.value.state is R
    assert fingerprint(core) == before


def test_recycle_of_a_destroyed_session_raises_session_destroyed_and_changes_nothing() -> None:
    core = core_destroyed()
    before = fingerprint(core)
    with pytest.raises(SessionDestroyed):
        core.recycle(stored_copy(core), now=5.0)
    assert fingerprint(core) == before


def test_recover_while_running_is_refused_and_changes_nothing() -> None:
    core = core_running()
    before = fingerprint(core)
    with pytest.raises(NotReady) as info:
        core.recover(stored_copy(core), now=5.0)
    assert info.value.state is R
    assert fingerprint(core) == before


def test_recover_of_a_destroyed_session_only_reports() -> None:
    core = core_destroyed()
    before = fingerprint(core)
    step = core.recover(stored_copy(core), now=5.0)
    assert step.reply == RecoveryReport()
    assert step.records == () and step.reload is None
    assert step.write_set("s") is None
    core.apply(step)
    assert fingerprint(core) == before


def test_a_retired_session_accepts_peer_responses_but_not_other_input() -> None:
    core = core_retired()
    before = fingerprint(core)
    with pytest.raises(NotReady):
        core.submit(Input("m", kind="peer_message"), input_id="x", now=5.0, internal=True)
    assert fingerprint(core) == before
    step = core.submit(Input("r", kind="peer_response"), input_id="y", now=5.0, internal=True)
    assert step.reply == Accepted(input_id="y")


# -- 3. input validation ----------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    "payload",
    [
        math.nan,
        {"x": [1, math.inf]},
        {1: "int key"},
        {"nested": [{"ok": 1, 2: "bad"}]},
        {None: "none key"},
        {1, 2},
        _Opaque(),
        b"bytes",
        "\ud800",  # a lone surrogate is not UTF-8
    ],
    ids=[
        "nan", "inf", "int-key", "nested-int-key", "none-key", "set", "object", "bytes", "surrogate"
    ],
)
def test_submit_rejects_a_payload_that_is_not_json_and_changes_nothing(payload: Any) -> None:
    core = core_attached()
    before = fingerprint(core)
    with pytest.raises(InputRejected) as info:
        core.submit(Input(payload), input_id="x", now=5.0)
    assert info.value.reason
    assert fingerprint(core) == before


def test_payload_size_is_its_utf8_length_and_the_limit_is_inclusive() -> None:
    core = new_core(max_payload_bytes=10)
    # '"éééé"' is 6 code points but 10 UTF-8 bytes.
    assert isinstance(core.submit(Input("éééé"), input_id="x", now=0).reply, Accepted)
    before = fingerprint(core)
    with pytest.raises(InputRejected) as info:
        core.submit(Input("ééééé"), input_id="y", now=0)
    assert "12 bytes" in info.value.reason
    assert fingerprint(core) == before


def test_metadata_that_is_not_json_is_rejected_at_submit() -> None:
    core = new_core()
    before = fingerprint(core)
    with pytest.raises(InputRejected):
        core.submit(Input("p", metadata={1: "x"}), input_id="x", now=0)
    with pytest.raises(InputRejected):
        core.submit(Input("p", metadata={"x": math.nan}), input_id="x", now=0)
    assert fingerprint(core) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"handling": "sideways"},
        {"durability": "forever"},
        {"kind": 3},
        {"kind": ""},
        {"kind": "k" * 129},
        {"idempotency_key": 5},
        {"idempotency_key": ""},
        {"supersession_key": b"k"},
        {"correlation_id": 1.5},
        {"metadata": ["not", "a", "mapping"]},
        {"metadata": "text"},
    ],
    ids=lambda f: "-".join(f"{k}={v!r}"[:30] for k, v in f.items()),
)
def test_input_rejects_wrong_typed_or_unknown_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(InputRejected) as info:
        Input("p", **fields)
    assert info.value.reason
    assert isinstance(info.value, ValueError)


def test_input_accepts_handling_and_durability_by_value() -> None:
    inp = Input("p", handling="steer", durability="ephemeral")
    assert inp.handling is Handling.STEER
    assert inp.durability is Durability.EPHEMERAL


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "peer_message"},
        {"kind": "peer_response"},
        {"idempotency_key": "suricate:outbox:1"},
    ],
    ids=["peer_message", "peer_response", "reserved-key"],
)
def test_reserved_kinds_and_keys_are_rejected_for_users_but_allowed_internally(
    fields: dict[str, Any],
) -> None:
    core = core_attached()
    before = fingerprint(core)
    with pytest.raises(InputRejected) as info:
        core.submit(Input("p", **fields), input_id="x", now=0)
    assert "reserved" in info.value.reason
    assert fingerprint(core) == before
    step = core.submit(Input("p", **fields), input_id="x", now=0, internal=True)
    assert step.reply == Accepted(input_id="x")


@pytest.mark.parametrize(
    "session_id",
    ["", "x" * 129, "a\x00b", "a\nb", "a\x7fb", "a\x85b", 7, None, b"bytes"],
    ids=["empty", "129-chars", "nul", "newline", "del", "nel", "int", "none", "bytes"],
)
def test_check_session_id_rejects_bad_ids(session_id: object) -> None:
    with pytest.raises(InputRejected) as info:
        check_session_id(session_id)
    assert info.value.reason


@pytest.mark.parametrize(
    "session_id",
    ["a", "x" * 128, "ünïcødé", "日本語", "emoji-🦦", "a b", "a\u2028b"],
    ids=["one", "128-chars", "accents", "cjk", "emoji", "space", "line-separator"],
)
def test_check_session_id_accepts_printable_and_non_control_ids(session_id: str) -> None:
    assert check_session_id(session_id) == session_id


def test_session_id_length_counts_code_points_not_bytes() -> None:
    assert check_session_id("é" * 128) == "é" * 128
    with pytest.raises(InputRejected):
        check_session_id("é" * 129)


def test_a_self_referencing_payload_is_rejected_rather_than_hanging() -> None:
    # Regression: the key walk looped forever on a circular payload.  Run in a
    # subprocess with an alarm so that a regression fails fast instead of hanging.
    script = textwrap.dedent(
        """
        import signal, sys
        from suricate import Input, InputRejected
        from suricate._model import Limits, SessionCore, SessionRecord, StoredSession

        def hung(*_):
            print("hung"); sys.exit(0)

        signal.signal(signal.SIGALRM, hung)
        signal.alarm(3)
        loop = []
        loop.append(loop)
        core = SessionCore(StoredSession(record=SessionRecord(session_id="s")), Limits())
        try:
            core.submit(Input(loop), input_id="x", now=0)
        except InputRejected:
            print("rejected")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "rejected"


# -- 4. reducer behaviour -----------------------------------------------------------


def test_a_repeated_idempotency_key_is_deduplicated_with_nothing_to_commit() -> None:
    core = new_core()
    first = submit(core, {"a": 1}, idempotency_key="k")
    before = fingerprint(core)
    step = core.submit(Input({"a": "other"}, idempotency_key="k"), input_id="x", now=5.0)
    assert step.reply == Deduplicated(input_id=first, existing_input_id=first)
    assert step.records == ()
    assert step.write_set("s") is None
    core.apply(step)
    assert fingerprint(core) == before


def test_idempotency_key_still_deduplicates_after_the_input_is_consumed() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    first = submit(core, idempotency_key="k")
    take(core, "r1")
    core.apply(core.commit_turn("r1", now=4.0))
    assert first not in core.active
    step = core.submit(Input("again", idempotency_key="k"), input_id="x", now=5.0)
    assert step.reply == Deduplicated(input_id=first, existing_input_id=first)


def test_a_newer_input_supersedes_a_queued_one_of_the_same_kind_and_key() -> None:
    core = new_core()
    old = submit(core, 1, kind="status", supersession_key="mood")
    other_kind = submit(core, 2, kind="other", supersession_key="mood")
    other_key = submit(core, 3, kind="status", supersession_key="weather")
    step = core.submit(
        Input(4, kind="status", supersession_key="mood"), input_id="new", now=5.0
    )
    gone = [r for r in step.records if r.input_id == old]
    assert len(gone) == 1
    assert gone[0].state is SUPERSEDED and gone[0].superseded_by == "new"
    assert gone[0].outcome() == Superseded(input_id=old, by="new")
    core.apply(step)
    assert old not in core.active
    assert [r.input_id for r in core.queued()] == [other_kind, other_key, "new"]


def test_a_staged_input_is_not_superseded() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    running = submit(core, 1, supersession_key="k")
    take(core, "r1")
    step = core.submit(Input(2, supersession_key="k"), input_id="new", now=5.0)
    assert [r.input_id for r in step.records] == ["new"]
    core.apply(step)
    assert core.active[running].state is S


def test_every_older_queued_input_of_the_same_key_is_superseded_after_a_failed_run() -> None:
    # Regression: the supersession index pointed at one input only, and a
    # requeued input took it over, so a newer queued input escaped.
    core = new_core()
    operate(core, Op.ATTACH)
    first = submit(core, 1, supersession_key="k")
    take(core, "r1")
    second = submit(core, 2, supersession_key="k")  # first is STAGED: not superseded
    core.apply(core.fail_turn("r1", error="boom", now=4.0))  # first is QUEUED again
    assert {core.active[first].state, core.active[second].state} == {Q}
    step = core.submit(Input(3, supersession_key="k"), input_id="third", now=5.0)
    gone = {r.input_id: r.superseded_by for r in step.records if r.state is SUPERSEDED}
    assert gone == {first: "third", second: "third"}
    core.apply(step)
    assert [r.input_id for r in core.queued()] == ["third"]


def test_steer_lane_is_served_before_the_queue() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    q1 = submit(core, "q1")
    q2 = submit(core, "q2")
    s1 = submit(core, "s1", handling=Handling.STEER)
    assert [r.input_id for r in core.queued()] == [s1, q1, q2]
    assert take(core, "r1").reply.input_ids == (s1,)
    core.apply(core.commit_turn("r1", now=4.0))
    assert take(core, "r2").reply.input_ids == (q1,)


def test_queue_runs_one_input_per_turn_in_submission_order() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    ids = [submit(core, n) for n in range(4)]
    served = []
    for n in range(4):
        run = take(core, f"r{n}").reply
        served.extend(run.input_ids)
        core.apply(core.commit_turn(run.run_id, now=4.0))
    assert served == ids
    assert take(core, "r-idle").reply is None


def test_max_batch_takes_several_queued_inputs_in_order() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    ids = [submit(core, n) for n in range(3)]
    assert take(core, "r1", max_batch=2).reply.input_ids == tuple(ids[:2])


def test_take_turn_needs_an_executor_and_no_turn_in_flight() -> None:
    core = new_core()
    submit(core)
    assert core.take_turn(run_id="r1", now=0) == Step()
    operate(core, Op.ATTACH)
    submit(core)
    take(core, "r1")
    assert core.take_turn(run_id="r2", now=0) == Step()


def test_a_failed_run_requeues_behind_other_queued_work_keeping_the_error() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    first = submit(core, "first")
    second = submit(core, "second")
    take(core, "r1")
    step = core.fail_turn("r1", error="boom", now=4.0)
    core.apply(step)
    requeued = core.active[first]
    assert requeued.state is Q and requeued.attempt == 1 and requeued.error == "boom"
    assert requeued.order > core.active[second].order
    assert [r.input_id for r in core.queued()] == [second, first]
    assert core.run is None and core.state is AT


def test_a_failed_run_abandons_with_max_attempts_once_attempts_are_spent() -> None:
    core = new_core(max_attempts=2)
    operate(core, Op.ATTACH)
    inp = submit(core)
    take(core, "r1")
    core.apply(core.fail_turn("r1", error="first error", now=4.0))
    take(core, "r2")
    assert core.active[inp].attempt == 2
    step = core.fail_turn("r2", error="last error", now=5.0)
    core.apply(step)
    (gone,) = step.records
    assert gone.state is ABANDONED and gone.attempt == 2
    assert gone.outcome() == Abandoned(
        input_id=inp, reason=AbandonReason.MAX_ATTEMPTS, error="last error"
    )
    assert core.active == {}


def test_a_failed_run_consumes_inputs_applied_at_a_boundary_and_requeues_the_rest() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    applied = submit(core, "a")
    take(core, "r1")
    steered = submit(core, "s", handling=Handling.STEER)
    core.apply(core.checkpoint("r1", now=4.0))  # applied -> APPLIED, steered joins
    step = core.fail_turn("r1", error="boom", now=5.0)
    states = {r.input_id: r.state for r in step.records}
    assert states == {applied: CONSUMED, steered: Q}


def test_interrupt_requeues_at_the_head_without_counting_the_attempt() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    first = submit(core, "first")
    second = submit(core, "second")
    take(core, "r1")
    assert core.active[first].attempt == 1
    core.apply(core.interrupt_turn("r1", now=4.0))
    assert core.active[first].state is Q and core.active[first].attempt == 0
    assert [r.input_id for r in core.queued()] == [first, second]
    assert take(core, "r2").reply.input_ids == (first,)
    assert core.active[first].attempt == 1


def test_an_interrupt_input_cancels_the_running_turn_and_runs_next() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    running = submit(core, "slow")
    take(core, "r1")
    step = core.submit(Input("stop that", handling="interrupt"), input_id="int", now=4.0)
    assert step.cancel_run
    core.apply(step)
    core.apply(core.interrupt_turn("r1", now=5.0))
    assert [r.input_id for r in core.queued()] == ["int", running]


def test_submit_beyond_max_queued_is_overloaded_and_changes_nothing() -> None:
    core = new_core(max_queued=2)
    operate(core, Op.ATTACH)
    submit(core, 1, idempotency_key="k")
    submit(core)
    take(core, "r1")  # staged inputs still count
    before = fingerprint(core)
    with pytest.raises(Overloaded):
        core.submit(Input(3), input_id="x", now=5.0)
    assert fingerprint(core) == before
    # A repeated key is not a new input: still answered.
    again = core.submit(Input(3, idempotency_key="k"), input_id="y", now=5.0)
    assert isinstance(again.reply, Deduplicated)
    core.apply(core.commit_turn("r1", now=6.0))
    assert isinstance(core.submit(Input(3), input_id="z", now=7.0).reply, Accepted)


def test_checkpoint_applies_staged_inputs_and_hands_steered_inputs_to_the_turn() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    first = submit(core, "first")
    queued = submit(core, "queued")
    take(core, "r1")
    steered = submit(core, "steer", handling=Handling.STEER)
    step = core.checkpoint("r1", snapshot={"n": 1}, results={first: "r1-result"}, now=4.0)
    assert [r.input_id for r in step.reply] == [steered]
    assert step.receipt is not None
    assert step.receipt.sequence == 1 and step.receipt.input_ids == (first,)
    assert step.snapshot is not None and step.snapshot.expected_revision == 0
    core.apply(step)
    assert core.active[first].state is A and core.active[first].boundary == 1
    assert core.active[first].result == "r1-result"
    assert core.active[steered].state is S and core.active[steered].run_id == "r1"
    assert core.active[queued].state is Q
    assert core.run is not None and core.run.input_ids == (first, steered)
    assert core.revision == 1 and core.snapshot_json == '{"n":1}'

    commit = core.commit_turn("r1", results={steered: "s-result"}, now=5.0)
    assert commit.receipt is not None
    assert commit.receipt.sequence == 2 and commit.receipt.input_ids == (steered,)
    core.apply(commit)
    outcomes = {r.input_id: (r.state, r.boundary, r.result) for r in commit.records}
    assert outcomes == {first: (CONSUMED, 1, "r1-result"), steered: (CONSUMED, 2, "s-result")}
    assert set(core.active) == {queued}


def test_results_for_inputs_outside_the_turn_are_rejected() -> None:
    core = new_core()
    operate(core, Op.ATTACH)
    submit(core)
    other = submit(core)
    take(core, "r1")
    before = fingerprint(core)
    with pytest.raises(InputRejected):
        core.commit_turn("r1", results={other: 1}, now=4.0)
    with pytest.raises(InputRejected):
        core.commit_turn("r1", snapshot={"bad": math.nan}, now=4.0)
    assert fingerprint(core) == before


def test_run_decisions_for_a_run_that_is_not_in_flight_are_refused() -> None:
    core = core_running()
    before = fingerprint(core)
    for decide in (
        lambda: core.commit_turn("other", now=0),
        lambda: core.fail_turn("other", error="e", now=0),
        lambda: core.interrupt_turn("other", now=0),
        lambda: core.checkpoint("other", now=0),
    ):
        with pytest.raises(NotReady):
            decide()
    assert fingerprint(core) == before


# -- 5. recovery (DESIGN section 7) -------------------------------------------------


def stored(*inputs: InputRecord, **kw: Any) -> StoredSession:
    next_order = max((r.order for r in inputs), default=0) + 1
    session = kw.pop(
        "record", SessionRecord(session_id="s", next_seq=next_order, next_order=next_order)
    )
    return StoredSession(record=session, inputs=inputs, **kw)


def test_recovery_keeps_queued_inputs_in_admission_order() -> None:
    st_ = stored(record("q1", Q, order=1), record("q2", Q, order=2))
    step = recover_step(st_, limits=Limits(), now=9.0)
    assert step.records == ()
    assert step.reply == RecoveryReport(inputs_recovered=2)
    core = new_core()
    core.apply(step)
    assert [r.input_id for r in core.queued()] == ["q1", "q2"]


def test_recovery_requeues_a_staged_input_with_attempts_left() -> None:
    step = recover_step(
        stored(record("s1", S, order=1, attempt=2, run_id="r1")),
        limits=Limits(max_attempts=3),
        now=9.0,
    )
    (back,) = step.records
    assert back.state is Q and back.attempt == 2
    assert step.reply.inputs_requeued == 1 and step.reply.inputs_abandoned == 0
    assert [r.input_id for r in step.reload.inputs] == ["s1"]


def test_recovery_abandons_a_staged_input_whose_attempts_are_spent() -> None:
    step = recover_step(
        stored(record("s1", S, order=1, attempt=3, run_id="r1")),
        limits=Limits(max_attempts=3),
        now=9.0,
    )
    (gone,) = step.records
    assert gone.outcome() == Abandoned(
        input_id="s1", reason=AbandonReason.MAX_ATTEMPTS, error="process exited during run"
    )
    assert step.reply.inputs_abandoned == 1 and step.reply.inputs_requeued == 0
    assert step.reload.inputs == ()


def test_recovery_consumes_an_applied_input_whose_boundary_has_a_receipt() -> None:
    st_ = stored(
        record("a1", A, order=1, attempt=1, run_id="r1", boundary=1),
        receipts=frozenset({("r1", 1)}),
    )
    step = recover_step(st_, limits=Limits(), now=9.0)
    (done,) = step.records
    assert done.state is CONSUMED and done.boundary == 1
    assert step.reload.inputs == ()


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, Q), (3, ABANDONED)], ids=["attempts-left", "attempts-spent"]
)
def test_recovery_treats_an_applied_input_without_receipt_as_staged(
    attempt: int, expected: InputState
) -> None:
    st_ = stored(
        record("a1", A, order=1, attempt=attempt, run_id="r1", boundary=1),
        receipts=frozenset({("r1", 2), ("other", 1)}),
    )
    (moved,) = recover_step(st_, limits=Limits(max_attempts=3), now=9.0).records
    assert moved.state is expected
    if expected is ABANDONED:
        assert moved.reason is AbandonReason.MAX_ATTEMPTS
        assert moved.error == "process exited during run"


def test_recovery_keeps_idempotency_keys_of_terminal_inputs() -> None:
    st_ = stored(record("q1", Q, order=2), idempotency={"done-key": "old-input"})
    core = new_core()
    core.apply(recover_step(st_, limits=Limits(), now=9.0))
    step = core.submit(Input("x", idempotency_key="done-key"), input_id="n", now=10.0)
    assert step.reply == Deduplicated(input_id="old-input", existing_input_id="old-input")


def test_recovery_of_a_mixed_session_reports_every_row() -> None:
    st_ = stored(
        record("q", Q, order=1),
        record("s-left", S, order=2, attempt=1, run_id="r"),
        record("s-spent", S, order=3, attempt=3, run_id="r"),
        record("a-receipt", A, order=4, attempt=1, run_id="r", boundary=1),
        receipts=frozenset({("r", 1)}),
    )
    step = recover_step(st_, limits=Limits(), now=9.0)
    assert step.reply.inputs_recovered == 4
    assert step.reply.inputs_requeued == 1
    assert step.reply.inputs_abandoned == 1
    assert len(step.reply.details) == 3
    assert {r.input_id: r.state for r in step.records} == {
        "s-left": Q,
        "s-spent": ABANDONED,
        "a-receipt": CONSUMED,
    }


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(
            lambda: stored(
                record("q", Q, order=1),
                record=SessionRecord(session_id="s", state=D, next_seq=2, next_order=2),
            ),
            id="destroyed-with-active-input",
        ),
        pytest.param(lambda: stored(record("q", Q, order=1, payload_json="")), id="no-payload"),
        pytest.param(
            lambda: stored(record("s", S, order=1, attempt=1, payload_json="")),
            id="staged-no-payload",
        ),
        pytest.param(
            lambda: stored(record=SessionRecord(session_id="s", version=2)),
            id="unknown-session-version",
        ),
        pytest.param(
            lambda: stored(record("q", Q, order=1, version=99)), id="unknown-input-version"
        ),
    ],
)
def test_recovery_fails_closed_on_corrupt_records(broken: Callable[[], StoredSession]) -> None:
    with pytest.raises(RecoveryCorruption):
        recover_step(broken(), limits=Limits(), now=9.0)
    core = new_core()
    before = fingerprint(core)
    with pytest.raises(RecoveryCorruption):
        core.recover(broken(), now=9.0)
    assert fingerprint(core) == before


def test_recovery_corruption_is_a_store_error() -> None:
    assert issubclass(RecoveryCorruption, suricate.StoreError)


# -- 6. invariants under random operation sequences --------------------------------

_submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(list(Handling)),
    st.sampled_from([None, "a", "b"]),
    st.sampled_from([None, "k1", "k2", "k3"]),
    st.sampled_from(list(Durability)),
)
_ops = st.lists(
    st.one_of(
        _submit_op,
        st.tuples(st.just("take"), st.integers(1, 3)),
        st.just(("checkpoint",)),
        st.just(("commit",)),
        st.just(("fail",)),
        st.just(("interrupt",)),
        st.sampled_from([("detach",), ("attach",)]),
        # Lifecycle operations, rarer: they clear the queue.
        st.sampled_from(
            [("retire",), ("reset",), ("stop",), ("recycle",), ("recover",), ("destroy",)]
        ),
    ),
    max_size=60,
)


def check_invariants(core: SessionCore, known: dict[str, InputState], limits: Limits) -> None:
    # Every input is in exactly one state, and only non-terminal ones are active.
    active_ids = {i for i, s in known.items() if not s.terminal}
    assert set(core.active) == active_ids
    for input_id, rec in core.active.items():
        assert not rec.state.terminal
        assert rec.state is known[input_id]
        assert rec.history[-1].state is rec.state
        assert 0 <= rec.attempt <= limits.max_attempts
    # Lanes: sorted by order, each queued input exactly once, lower lanes first.
    queued = list(core.queued())
    assert len({r.input_id for r in queued}) == len(queued)
    assert {r.input_id for r in queued} == {i for i, r in core.active.items() if r.state is Q}
    lanes = [r.lane for r in queued]
    assert lanes == sorted(lanes)
    for lane in range(3):
        orders = [r.order for r in core.queued(lane)]
        assert orders == sorted(set(orders))
    # A turn holds exactly the staged and applied inputs.
    in_run = {i for i, r in core.active.items() if r.state in (S, A)}
    if core.run is None:
        assert in_run == set()
    else:
        assert len(set(core.run.input_ids)) == len(core.run.input_ids)
        assert set(core.run.input_ids) == in_run
    assert len(core.active) <= limits.max_queued


@settings(max_examples=300, deadline=None, database=None)
@given(ops=_ops)
def test_random_operation_sequences_keep_every_invariant(ops: list[tuple[Any, ...]]) -> None:
    limits = Limits(max_queued=6, max_attempts=2)
    core = SessionCore(StoredSession(record=SessionRecord(session_id="s")), limits)
    core.apply(core.operate(Op.ATTACH, now=0))
    known: dict[str, InputState] = {}
    counter = itertools.count(1)
    for now, op in enumerate(ops, start=1):
        before = fingerprint(core)
        run_id = core.run.run_id if core.run is not None else "no-such-run"
        try:
            if op[0] == "submit":
                _, handling, skey, key, durability = op
                step = core.submit(
                    Input(
                        now,
                        handling=handling,
                        supersession_key=skey,
                        idempotency_key=key,
                        durability=durability,
                    ),
                    input_id=f"i{next(counter)}",
                    now=now,
                )
            elif op[0] == "take":
                step = core.take_turn(run_id=f"r{next(counter)}", now=now, max_batch=op[1])
            elif op[0] == "checkpoint":
                step = core.checkpoint(run_id, snapshot=now, now=now)
            elif op[0] == "commit":
                step = core.commit_turn(run_id, snapshot=now, now=now)
            elif op[0] == "fail":
                step = core.fail_turn(run_id, error=f"e{now}", now=now)
            elif op[0] == "interrupt":
                step = core.interrupt_turn(run_id, now=now)
            elif op[0] == "recycle":
                step = core.recycle(stored_copy(core), now=now)
            elif op[0] == "recover":
                step = core.recover(stored_copy(core), now=now)
            else:
                step = core.operate(Op[op[0].upper()], now=now)
        except (NotReady, Overloaded, SessionDestroyed):
            assert fingerprint(core) == before
            continue
        core.apply(step)
        for rec in step.records:
            known[rec.input_id] = rec.state
        if step.cancel_run and core.run is not None:
            # The shell cancels the turn; its inputs go back per interrupt_turn.
            cancelled = core.interrupt_turn(core.run.run_id, now=now)
            core.apply(cancelled)
            for rec in cancelled.records:
                known[rec.input_id] = rec.state
        if isinstance(step.reply, Deduplicated):
            assert step.reply.input_id in known
        check_invariants(core, known, limits)
