"""Values of the session domain: inputs, their records, outcomes and reports.

Everything here is an immutable ``attrs`` value.  Payloads, results and
metadata are kept as canonical JSON text (``encode_json``), so every store
hands back exactly what the SQLite store would: a tuple comes back as a list.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._errors import InputRejected

__all__ = [
    "AbandonReason",
    "Abandoned",
    "Accepted",
    "Completed",
    "Deduplicated",
    "DestroyReport",
    "Durability",
    "Handling",
    "Input",
    "InputRecord",
    "InputState",
    "Outcome",
    "RecoveryReport",
    "RecycleReport",
    "ResetReport",
    "RetireReport",
    "SessionState",
    "StateChange",
    "StopReport",
    "Superseded",
    "check_text",
    "decode_json",
    "encode_json",
    "encodable",
]

#: Record version written by this release; reading any other fails loudly.
RECORD_VERSION: Final = 1

RESERVED_KEY_PREFIX: Final = "suricate:"
RESERVED_KINDS: Final = frozenset({"peer_message", "peer_response"})
MAX_KEY_LENGTH: Final = 1024


class Durability(enum.Enum):
    """Whether an input is written to the store before ``submit`` returns."""
    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow

    DURABLE = "durable"
    EPHEMERAL = "ephemeral"


class Handling(enum.Enum):
    """Which lane an input joins (DESIGN section 4)."""
    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow

    QUEUE = "queue"
    STEER = "steer"
    INTERRUPT = "interrupt"


class InputState(enum.Enum):
    """States of one input; the last three are terminal."""
    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow

    QUEUED = "queued"
    STAGED = "staged"
    APPLIED = "applied"
    CONSUMED = "consumed"
    SUPERSEDED = "superseded"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL: Final = frozenset({InputState.CONSUMED, InputState.SUPERSEDED, InputState.ABANDONED})


class AbandonReason(enum.Enum):
    """Why an input was abandoned."""
    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow

    RETIRED = "retired"
    RESET = "reset"
    STOPPED = "stopped"
    DESTROYED = "destroyed"
    CANCELLED = "cancelled"
    MAX_ATTEMPTS = "max_attempts"
    FAILED = "failed"
    """The executor raised ``TerminalError``: never retried."""


class SessionState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's name hash is slow
    """Lifecycle states of a session (DESIGN section 5).

    ``ATTACHED`` and ``RUNNING`` exist only in memory; they persist as ``IDLE``.
    """

    IDLE = "idle"
    ATTACHED = "attached"
    RUNNING = "running"
    RETIRED = "retired"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


# -- JSON --------------------------------------------------------------------------

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def _check_keys(value: Any) -> None:
    """Reject non-``str`` object keys, which ``json`` would silently coerce."""
    if type(value) is dict:
        for key, sub in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise InputRejected(f"JSON object keys must be str, got {type(key).__name__}")
            kind = type(sub)
            if kind is dict or kind is list or kind is tuple:
                _check_keys(sub)
    elif type(value) is list or type(value) is tuple:
        for sub in value:
            kind = type(sub)
            if kind is dict or kind is list or kind is tuple:
                _check_keys(sub)
    elif isinstance(value, (dict, list, tuple)):  # subclasses: the slow path
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for key, sub in items:
            if isinstance(value, dict) and not isinstance(key, str):
                raise InputRejected(f"JSON object keys must be str, got {type(key).__name__}")
            _check_keys(sub)


def encode_json(value: Any, *, what: str = "payload") -> str:
    """Encode ``value`` as canonical JSON text.

    Raises:
        InputRejected: for NaN or infinities, non-``str`` object keys, or any
            value JSON cannot represent.
    """
    try:
        _check_keys(value)
        text = _encoder.encode(value)
        text.encode("utf-8")
    except InputRejected:
        raise
    except RecursionError:
        raise InputRejected(f"{what} is circular or nested too deeply") from None
    except (TypeError, ValueError, UnicodeError) as exc:
        raise InputRejected(f"{what} is not JSON-serializable: {exc}") from None
    return text


def decode_json(text: str | None) -> Any:
    """Decode JSON text written by :func:`encode_json` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)


# -- inputs ------------------------------------------------------------------------


def _to_handling(value: Handling | str) -> Handling:
    try:
        return value if isinstance(value, Handling) else Handling(value)
    except ValueError:
        raise InputRejected(f"unknown handling {value!r}") from None


def _to_durability(value: Durability | str) -> Durability:
    try:
        return value if isinstance(value, Durability) else Durability(value)
    except ValueError:
        raise InputRejected(f"unknown durability {value!r}") from None


def encodable(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: object, what: str) -> str:
    """Validate an identifier given to the public API: a ``str`` that UTF-8
    can encode (every store keeps text as UTF-8), checked before any lookup.

    Raises:
        InputRejected: not a ``str``, or it holds a lone surrogate.
    """
    if not isinstance(value, str):
        raise InputRejected(f"{what} must be a str, got {type(value).__name__}")
    if not encodable(value):
        raise InputRejected(f"{what} is not encodable as UTF-8 (it holds a lone surrogate)")
    return value


def _optional_key(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise InputRejected(
            f"{attribute.name} must be a non-empty str of at most {MAX_KEY_LENGTH} characters"
        )
    check_text(value, attribute.name)


def _kind(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise InputRejected("kind must be a non-empty str of at most 128 characters")
    check_text(value, "kind")


def _metadata(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise InputRejected("metadata must be a mapping or None")


@attrs.frozen
class Input:
    """One unit of work submitted to a session.

    Args:
        payload: any JSON value; executors receive it decoded.
        kind: a free label; a newer input of the same kind and
            ``supersession_key`` supersedes a queued one.
        durability: ``DURABLE`` inputs are committed before ``submit`` returns;
            ``EPHEMERAL`` ones are never written to the store.
        idempotency_key: a repeated key in the same session is ``Deduplicated``.
        supersession_key: see ``kind``.
        handling: ``QUEUE``, ``STEER`` or ``INTERRUPT`` (or their string values).
        correlation_id: carried through unchanged (peer requests use it).
        metadata: a JSON object carried with the input.

    ``input_id`` is set by the runtime on the inputs a :class:`Turn` hands to an
    executor; leave it unset when submitting.

    Raises:
        InputRejected: for arguments of the wrong type, an unknown handling,
            or a key, kind or correlation id that UTF-8 cannot encode (a lone
            surrogate).  A payload or metadata that UTF-8 cannot encode is
            rejected by ``submit``, which encodes them.
    """

    payload: Any
    kind: str = attrs.field(default="prompt", kw_only=True, validator=_kind)
    durability: Durability = attrs.field(
        default=Durability.DURABLE, kw_only=True, converter=_to_durability
    )
    idempotency_key: str | None = attrs.field(default=None, kw_only=True, validator=_optional_key)
    supersession_key: str | None = attrs.field(
        default=None, kw_only=True, validator=_optional_key
    )
    handling: Handling = attrs.field(default=Handling.QUEUE, kw_only=True, converter=_to_handling)
    correlation_id: str | None = attrs.field(default=None, kw_only=True, validator=_optional_key)
    metadata: Mapping[str, Any] | None = attrs.field(
        default=None, kw_only=True, validator=_metadata
    )
    input_id: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class StateChange:
    """One entry of an input's history.

    ``error`` says why a run ended without committing the input, on every
    entry that leaves ``STAGED`` or ``APPLIED`` other than by the run's own
    checkpoint or commit: the failed run's error, ``"interrupted"``, or
    ``"process exited during run"``.  ``None`` otherwise.
    """

    state: InputState
    at: float
    run_id: str | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class InputRecord:
    """The durable record of one input: what was submitted and where it is now."""

    session_id: str
    input_id: str
    seq: int
    """Admission sequence in the session: defines submit order."""
    order: int
    """Position in its lane: the admission sequence, or a later one after a failed run."""
    kind: str
    payload_json: str
    durability: Durability
    handling: Handling
    idempotency_key: str | None = None
    supersession_key: str | None = None
    correlation_id: str | None = None
    metadata_json: str | None = None
    state: InputState = InputState.QUEUED
    attempt: int = 0
    run_id: str | None = None
    boundary: int | None = None
    """The receipt sequence of the boundary that applied or consumed it."""
    reason: AbandonReason | None = None
    error: str | None = None
    result_json: str | None = None
    superseded_by: str | None = None
    submitted_at: float = 0.0
    history: tuple[StateChange, ...] = ()
    version: int = RECORD_VERSION
    stored_history: int = attrs.field(default=0, eq=False, repr=False)
    """How many leading entries of ``history`` the store holds; 0 for a
    record that was never written.

    History is append-only in storage: a store writes only the entries after
    these, and once the write-set holding the record is durable it counts
    them all in (:func:`mark_stored`).  A copy of the record carries the
    count, so a record moved twice before one commit still writes both of
    its new entries.  A store holding another number of entries (a commit
    whose record was never adopted) rewrites the history whole; a record
    with a count whose input the store never held fails the write-set.
    Bookkeeping of the store: it takes no part in equality.
    """

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)

    @property
    def metadata(self) -> Any:
        return decode_json(self.metadata_json)

    @property
    def result(self) -> Any:
        return decode_json(self.result_json)

    @property
    def durable(self) -> bool:
        return self.durability is Durability.DURABLE

    @property
    def lane(self) -> int:
        """0 for INTERRUPT, 1 for STEER, 2 for QUEUE: lower lanes are served first."""
        return _LANE[self.handling]

    def to_input(self) -> Input:
        """The :class:`Input` an executor sees, payload decoded afresh."""
        return Input(
            self.payload,
            kind=self.kind,
            durability=self.durability,
            idempotency_key=self.idempotency_key,
            supersession_key=self.supersession_key,
            handling=self.handling,
            correlation_id=self.correlation_id,
            metadata=self.metadata,
            input_id=self.input_id,
        )

    def outcome(self) -> Outcome | None:
        """The terminal outcome, or ``None`` while the input is not terminal."""
        if self.state is InputState.CONSUMED:
            last = self.history[-1] if self.history else None
            interrupted = last is not None and last.error is not None
            return Completed(input_id=self.input_id, result=self.result, interrupted=interrupted)
        if self.state is InputState.ABANDONED:
            assert self.reason is not None
            return Abandoned(input_id=self.input_id, reason=self.reason, error=self.error)
        if self.state is InputState.SUPERSEDED:
            assert self.superseded_by is not None
            return Superseded(input_id=self.input_id, by=self.superseded_by)
        return None


_LANE: Final = {Handling.INTERRUPT: 0, Handling.STEER: 1, Handling.QUEUE: 2}

_set_field: Final = object.__setattr__


def mark_stored(records: Iterable[InputRecord]) -> None:
    """Count every history entry of ``records`` as stored.

    A store calls this once the write-set holding them is durable, and never
    for a write-set that failed: its entries are then written by the next
    write of the input.
    """
    for record in records:
        _set_field(record, "stored_history", len(record.history))


# -- acknowledgements and outcomes ---------------------------------------------------


@attrs.frozen(kw_only=True)
class Accepted:
    """``submit`` admitted a new input (durably, unless it is ephemeral)."""

    input_id: str
    state: InputState = InputState.QUEUED


@attrs.frozen(kw_only=True)
class Deduplicated:
    """``submit`` found the idempotency key already used in this session.

    ``input_id`` and ``existing_input_id`` are both the earlier input's id."""

    input_id: str
    existing_input_id: str


@attrs.frozen(kw_only=True)
class Completed:
    """The input's turn committed; ``result`` is what the executor returned for it.

    ``interrupted`` is true when the run was cut short after a checkpoint: the
    input was ``APPLIED`` (its effects committed at that boundary) and the run
    then failed, crashed or was cancelled; ``result`` is what the checkpoint
    recorded.
    """

    input_id: str
    result: Any = None
    interrupted: bool = False


@attrs.frozen(kw_only=True)
class Abandoned:
    """The input will never run (again): ``reason`` says why, ``error`` the last error."""

    input_id: str
    reason: AbandonReason
    error: str | None = None


@attrs.frozen(kw_only=True)
class Superseded:
    """A newer input (``by``) of the same kind and supersession key replaced it."""

    input_id: str
    by: str


Outcome = Completed | Abandoned | Superseded


# -- reports -----------------------------------------------------------------------

_count = attrs.validators.ge(0)


@attrs.frozen(kw_only=True)
class RetireReport:
    """``retire``: inputs abandoned (no executor) and inputs left to drain."""

    inputs_abandoned: int = attrs.field(default=0, validator=_count)
    inputs_pending_drain: int = attrs.field(default=0, validator=_count)


@attrs.frozen(kw_only=True)
class ResetReport:
    inputs_abandoned: int = attrs.field(default=0, validator=_count)


@attrs.frozen(kw_only=True)
class RecycleReport:
    inputs_transferred: int = attrs.field(default=0, validator=_count)


@attrs.frozen(kw_only=True)
class StopReport:
    inputs_abandoned: int = attrs.field(default=0, validator=_count)


@attrs.frozen(kw_only=True)
class DestroyReport:
    inputs_abandoned: int = attrs.field(default=0, validator=_count)


@attrs.frozen(kw_only=True)
class RecoveryReport:
    """What recovery did to the stored inputs (DESIGN section 7)."""

    inputs_recovered: int = attrs.field(default=0, validator=_count)
    inputs_requeued: int = attrs.field(default=0, validator=_count)
    inputs_abandoned: int = attrs.field(default=0, validator=_count)
    details: tuple[str, ...] = ()
