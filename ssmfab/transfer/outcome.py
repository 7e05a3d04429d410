"""What a transfer reports: the files that arrived, and the one-line error when it did not all arrive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..exceptions import SSMFabError, TransferError
from .paths import label_of, one_line, show

if TYPE_CHECKING:
    from .session import Session, StallWatch


@dataclass(frozen=True)
class FileTransfer:
    """One file that arrived: from where, to where, its size, SHA-256 (equal on both ends) and final mode."""

    source: str
    destination: str
    size: int
    sha256: str
    mode: int


@dataclass
class TransferReport:
    """What a put or get did on one host. When ``errors`` is not empty the call raised a TransferError
    (carrying this report as ``.report``) after delivering everything else."""

    host: str = ""
    items: list[FileTransfer] = field(default_factory=list)
    #: What was asked for, as an absolute path (a glob for a get of one) and where it went: the file, or the
    #: top of the tree or the folder the files went into (absolute on the receiving side).
    source: str = ""
    destination: str = ""
    #: Directories of the tree created or filled (empty ones included), on the receiving side.
    directories: list[str] = field(default_factory=list)
    #: One line per refused or failed file, naming host, path and what to do.
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    #: Bytes of file content that crossed the link (less than ``bytes`` when streams were compressed).
    wire_bytes: int = 0
    #: The most SSM sessions one file went over (striped uploads; see ssmfab.transfer.stripe).
    streams: int = 1

    @property
    def files(self) -> int:
        return len(self.items)

    @property
    def bytes(self) -> int:  # noqa: A003 - the name every report of the package uses
        return sum(item.size for item in self.items)

    @property
    def paths(self) -> list[str]:
        return [item.destination for item in self.items]


def incomplete(report: TransferReport) -> TransferError:
    more = len(report.errors) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''}; {report.files} files arrived)" if more else ""
    error = TransferError(report.errors[0] + tail, report.host)
    setattr(error, "report", report)  # noqa: B010 - the files that did arrive, for scripts that want them
    return error


class LocalReadError(Exception):
    """Reading a file on this machine failed during an upload (a dying disk, a dropped network mount, a file
    removed since it was listed). Not an OSError on purpose: the handlers of the link's and the host's
    OSErrors must never take it for theirs (failure words it)."""

    def __init__(self, what: str, exc: OSError) -> None:
        super().__init__(f"reading {what} on this machine: {exc.strerror or exc}")


def failure(
    conn: Any, session: Session | None, exc: BaseException, doing: str, watch: StallWatch, left: list[str]
) -> BaseException:
    """The one-line TransferError for a transfer that failed part-way (KeyboardInterrupt and the like pass)."""
    if not isinstance(exc, Exception):
        return exc
    host = label_of(conn)
    # paramiko's EOFError is the channel or connection ending; the transport may say it is active for a moment
    # after (it closes its channels before it marks itself inactive). Its SFTP client reports that EOFError as
    # SSHException("Server connection dropped"), raised while handling it.
    lost = session is None or not session.alive() or isinstance(exc, EOFError) or isinstance(exc.__context__, EOFError)
    note = ""
    if left:
        # Left while the host still answers: it refused the removal; otherwise nothing could be removed.
        when = "once the host is reachable" if lost else "on the host"
        note = f"; temporary {'file' if len(left) == 1 else 'files'} {show(left[0])}{' and others' if len(left) > 1 else ''} may remain, delete {'it' if len(left) == 1 else 'them'} {when}"
    if watch.current:
        doing = f"{doing} (at {show(watch.current)})"
    if watch.stalled:
        return TransferError(
            f"{host}: {doing} stalled: no progress for {watch.limit:g}s (ssh.stall_timeout); nothing left "
            f"half-written{note}; check the host and its tunnel, then retry",
            host,
        )
    if isinstance(exc, LocalReadError):
        return TransferError(
            f"{host}: {doing} failed, nothing left half-written{note} ({exc}); check this machine's disk or mount, then retry",
            host,
        )
    if isinstance(exc, SSMFabError):
        if note and isinstance(exc, TransferError):
            return TransferError(f"{exc}{note}", host)
        return exc
    explain: Callable[[BaseException], Any] | None = getattr(conn, "explain", None) if lost else None
    explained = explain(exc) if explain is not None else None
    reason = one_line(str(explained) if explained is not None else f"{type(exc).__name__}: {exc}")
    reason = reason.removeprefix(f"{host}: ")
    advice = "check the connection, then retry" if lost else "fix the cause, then retry"
    return TransferError(f"{host}: {doing} failed, nothing left half-written{note} ({reason}); {advice}", host)
