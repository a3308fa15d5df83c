"""The typed messages between a writer-process store and its child: calls, answers, faults.

The hot path (one call per write, one Round per batch of commits) pickles as plain tuples: a
dataclass per answer made a round's pickling 40 times slower than the tuples it replaced, and a
pickled Call cost 7 times a tuple. So calls cross as WireCall tuples (decoded into a Call on
arrival), a round's answers are typed tuples, and a Round reduces to the tuple of its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from exporter.errors import StoreError, StoreUnavailable

# A Record as a plain tuple (the fields in Record's order): pickles faster than the NamedTuple.
RecordFields = tuple[bytes, str, str, str | None, str | None, bool | None, float, bytes | None]


class Op(Enum):
    """What a call asks the writer to do."""

    WRITE = "write"  # args: tuple[RecordFields, ...]; value: Counted
    READY = "ready"  # args: None; value: bool
    PRUNE = "prune"  # args: PruneSlice; value: int
    KEY_FINGERPRINT = "key_fingerprint"  # args: str; value: str
    CLOSE = "close"  # args: None; no answer


@dataclass(frozen=True, slots=True)
class PruneSlice:
    """Prune users not seen since `before` whose ids are in [lo, hi)."""

    before: float
    lo: bytes
    hi: bytes | None


Args = tuple[RecordFields, ...] | PruneSlice | str | None


@dataclass(frozen=True, slots=True)
class Call:
    """One request from the parent: its id, the op, the parent's clock reading, and the op's arguments.

    `op` is a str only when the parent named an op this child does not know; the child answers
    such a call with an error.
    """

    id: int
    op: Op | str
    now: float
    args: Args = None


WireCall = tuple[int, str, float, Args]  # a Call as it crosses the pipe: id, op value, now, args


def encode_call(call_id: int, op: Op, now: float, args: Args = None) -> WireCall:
    """Return a call as the plain tuple sent over the pipe (the cheapest thing to pickle)."""
    return (call_id, op.value, now, args)


def decode_call(wire: object) -> Call:
    """Rebuild a Call from the pipe; an op this side does not know stays a str (answered with an error)."""
    if not (isinstance(wire, tuple) and len(wire) == 4):
        return Call(0, f"malformed call {type(wire).__name__}", 0.0)
    call_id, op, now, args = wire
    try:
        return Call(call_id, Op(op), now, args)
    except ValueError:
        return Call(call_id, str(op), now, args)


class FaultKind(Enum):
    """Which error a fault raises in the parent."""

    UNAVAILABLE = "unavailable"  # StoreUnavailable: retry later (503)
    ERROR = "error"  # StoreError: the call cannot work as made


@dataclass(frozen=True, slots=True)
class Fault:
    """An error raised in the child, carried across the pipe with its type and reason."""

    kind: FaultKind
    reason: str
    retry_after: int | None = None

    @staticmethod
    def of(exc: BaseException) -> Fault:
        """Describe an exception; errors of other types (bugs) become StoreUnavailable, naming the cause."""
        if isinstance(exc, StoreUnavailable):
            return Fault(FaultKind.UNAVAILABLE, exc.description, exc.retry_after)
        if isinstance(exc, StoreError):
            return Fault(FaultKind.ERROR, str(exc))
        return Fault(
            FaultKind.UNAVAILABLE, f"the store writer failed ({type(exc).__name__}: {exc}); retry later"
        )

    def exception(self) -> StoreUnavailable | StoreError:
        """Return the exception to raise in the parent."""
        if self.kind is FaultKind.UNAVAILABLE:
            if self.retry_after is None:
                return StoreUnavailable(self.reason)
            return StoreUnavailable(self.reason, retry_after=self.retry_after)
        return StoreError(self.reason)


Counted = tuple[list[bool], dict[str, int]]  # a write's answer: per record counted, overflows by label
Value = Counted | bool | int | str
WriteAnswer = tuple[int, list[bool], dict[str, int]]  # call id, then the Counted fields
ValueAnswer = tuple[int, bool | int | str]  # call id, the value of READY, PRUNE or KEY_FINGERPRINT
FaultAnswer = tuple[int, Fault]  # call id, what failed


@dataclass(frozen=True, slots=True)
class Round:
    """What the child sends after each round of calls: every answer, and the commits it made."""

    written: list[WriteAnswer]
    values: list[ValueAnswer]
    faults: list[FaultAnswer]
    commits: list[tuple[int, float]] = field(default_factory=list)  # (records, seconds) per commit

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a plain tuple of the fields."""
        return (Round, (self.written, self.values, self.faults, self.commits))


@dataclass(frozen=True, slots=True)
class Started:
    """The child opened the store and takes calls."""


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The child could not open the store."""

    fault: Fault


@dataclass(frozen=True, slots=True)
class Closed:
    """The child committed everything and closed the store; nothing follows."""


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """What the child needs to open its writer, including the parent's clock reading at start."""

    max_versions: int
    dedup_window: int
    now: float


ChildMessage = Round | Started | StartFailed | Closed
