"""`type = "file"`: the feed as JSONL, the same bytes `streamd tail` prints.

Appends one line per event, flushes per batch and (`fsync = true`, the default)
fsyncs per batch before the offset moves. Rotation by size renames the file
(`feed.jsonl` → `feed.jsonl.1` → … → `feed.jsonl.<keep>`) and starts a new one,
which `tail -F` follows by name.

On start, the sink reads its own last line: a line torn by a crash is cut off,
and delivery resumes after the last complete line's seq, so the file holds every
event exactly once, in seq order, even across SIGKILL.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from ..config import SinkConfig
from ..errors import Retryable
from ..store import FeedEvent
from ..units import Size
from .base import Sink, SinkSpec


class FileSinkConfig(SinkConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str
    # Rotate when the next batch would take the file past this size; 0 never rotates.
    rotate_bytes: Size = Size(100 * 2**20)
    # Rotated files kept beside the live one (path.1 … path.<keep>).
    keep: int = 5
    fsync: bool = True


def _validate(cfg: FileSinkConfig) -> list[str]:
    problems = []
    if cfg.keep < 0:
        problems.append("keep: must be 0 or more")
    if cfg.rotate_bytes.bytes and cfg.rotate_bytes.bytes < 4096:
        problems.append("rotate_bytes: must be 0 (never) or at least 4096")
    return problems


class _Seq(msgspec.Struct):
    seq: int


_TAIL = 1 << 16


def _last_seq(path: Path, *, repair: bool) -> int | None:
    """seq of the last complete line; cut a torn last line off when `repair`."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    with open(path, "r+b" if repair else "rb") as f:
        start = max(st.st_size - _TAIL, 0)
        f.seek(start)
        tail = f.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if repair:
                f.truncate(start + cut + 1 if cut >= 0 else start)
                f.flush()
                os.fsync(f.fileno())
            tail = tail[: cut + 1] if cut >= 0 else b""
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        last = lines[-1] if lines else b""
    if not last:
        return None
    try:
        return msgspec.json.decode(last, type=_Seq).seq
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


class FileSink(Sink):
    def __init__(self, name: str, cfg: FileSinkConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.path = Path(cfg.path)
        self._fd: int | None = None
        self._size = 0

    def _recover(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seq = _last_seq(self.path, repair=True)
        if seq is None:
            seq = _last_seq(self.path.with_name(self.path.name + ".1"), repair=False)
        return seq or 0

    async def recover(self) -> int:
        try:
            return await anyio.to_thread.run_sync(self._recover)
        except OSError as exc:
            raise Retryable(f"{self.path}: {exc.strerror}") from None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _rotate(self) -> None:
        self._close()
        keep = self.cfg.keep
        name = self.path.name
        if keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            oldest = self.path.with_name(f"{name}.{keep}")
            oldest.unlink(missing_ok=True)
            for i in range(keep - 1, 0, -1):
                src = self.path.with_name(f"{name}.{i}")
                if src.exists():
                    src.rename(self.path.with_name(f"{name}.{i + 1}"))
            self.path.rename(self.path.with_name(f"{name}.1"))
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write(self, data: bytes) -> None:
        fd = self._open()
        limit = self.cfg.rotate_bytes.bytes
        if limit and self._size > 0 and self._size + len(data) > limit:
            self._rotate()
            fd = self._open()
        before = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.cfg.fsync:
                os.fsync(fd)
                if before == 0:
                    self._fsync_dir()
        except OSError:
            # A half-written batch would leave a torn line that the retry appends after:
            # cut the file back to where this batch began.
            try:
                os.ftruncate(fd, before)
            except OSError:
                pass
            self._close()
            raise
        self._size = before + len(data)

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        data = b"".join(e.line for e in events)
        try:
            await anyio.to_thread.run_sync(self._write, data, abandon_on_cancel=True)
        except OSError as exc:
            # Disk full, permissions, a vanished directory: all may heal; keep the offset.
            raise Retryable(f"{self.path}: {exc.strerror or exc}") from None

    async def aclose(self) -> None:
        self._close()


def _build(name: str, cfg: FileSinkConfig) -> FileSink:
    return FileSink(name, cfg)


SPEC = SinkSpec(config=FileSinkConfig, build=_build, validate=_validate, path_fields=("path",))
