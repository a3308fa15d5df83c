"""The typed messages between a writer-process store and its child: calls, answers, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from exporter.errors import StoreError, StoreUnavailable

# A Record as a plain tuple (the fields in Record's order): pickles faster than the NamedTuple.
RecordFields = tuple[bytes, str, str, str | None, str | None, bool | None, float, bytes | None]


class Op(Enum):
    """What a call asks the writer to do."""

    WRITE = "write"  # args: tuple[RecordFields, ...]; value: Written
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
    """One request from the parent: its id, the op, the parent's clock reading, and the op's arguments."""

    id: int
    op: Op
    now: float
    args: Args = None


@dataclass(frozen=True, slots=True)
class Written:
    """A write's answer: per record whether it was counted, and the label overflows."""

    counted: list[bool]
    overflow: dict[str, int]


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


Value = Written | bool | int | str


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to the call with this id: a value, or a fault."""

    id: int
    value: Value | None = None
    fault: Fault | None = None


@dataclass(frozen=True, slots=True)
class Round:
    """What the child sends after each round of calls: the answers, and the commits it made."""

    answers: list[Answer]
    commits: list[tuple[int, float]] = field(default_factory=list)  # (records, seconds) per commit


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
