"""Running the database tools with streamed stdin/stdout, and a psql session over a pipe.

Nothing here buffers a whole dump: bytes move in 1 MiB pieces between a tool's pipe and the
encryption layer. A tool's stderr goes to a temporary file (read only on failure), so a
chatty tool can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from backups.executor import Command, Executor
from orbisctl.core.errors import DataError, EngineError

PIPE_CHUNK = 1024 * 1024


def _popen(command: Command, **kwargs: object) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(command.argv, env={**os.environ, **command.env}, **kwargs)  # type: ignore[call-overload, no-any-return]
    except FileNotFoundError:
        raise EngineError(
            f"{command.argv[0]} is not installed",
            hint="install the PostgreSQL 15 and Redis client tools (postgresql-client-15, redis-tools)",
        ) from None


def _last_error_line(stderr: IO[bytes]) -> str:
    """The line that says what went wrong: the last error, else the last line."""
    stderr.seek(0)
    lines = [line.strip() for line in stderr.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "ERROR:" in line or "FATAL:" in line or "error:" in line]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no error output"


def stream_out(command: Command, consume: Callable[[bytes], object], *, what: str) -> None:
    """Run a tool and hand its stdout to `consume` piece by piece; raise if it fails."""
    with tempfile.TemporaryFile() as stderr:
        process = _popen(command, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        try:
            while piece := process.stdout.read(PIPE_CHUNK):
                consume(piece)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        if process.wait() != 0:
            raise EngineError(f"{what} failed: {_last_error_line(stderr)}")


def stream_in(
    command: Command, pieces: Iterable[bytes], *, what: str, reads_all: bool = True
) -> bytes:
    """Feed `pieces` to a tool's stdin; return its stdout. Raise if the tool or the feed fails.

    A tool that `reads_all` (pg_restore restoring) failed if it stopped reading early; one
    that does not (`pg_restore --list` stops after the table of contents) did not, and the
    rest of the feed is still consumed, so it still authenticates to the end.

    If the feed raises (a chunk fails authentication), the tool is killed before it sees
    end-of-input, so it cannot mistake a cut stream for a complete one.
    """
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as stdout:
        process = _popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr)
        assert process.stdin is not None
        broken = False
        try:
            for piece in pieces:
                if broken:
                    continue  # drain the feed so it still authenticates to the end
                try:
                    process.stdin.write(piece)
                except BrokenPipeError:
                    broken = True
        except BaseException:
            process.kill()
            process.wait()
            raise
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        if process.wait() != 0 or (broken and reads_all):
            raise EngineError(f"{what} failed: {_last_error_line(stderr)}")
        stdout.seek(0)
        return stdout.read()


class PsqlSession:
    """One psql process kept open over pipes, so queries share a session (and a snapshot).

    Works the same through `docker compose exec -T`, which is why it is psql and not a
    driver connection. Queries return rows of text fields; they must not return newlines.
    """

    def __init__(self, executor: Executor, dbname: str) -> None:
        self._marker = f"--orbis-end-{secrets.token_hex(8)}--"
        # closed in close(); the session outlives this method
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        command = executor.postgres(
            "psql",
            [
                "--no-psqlrc",
                "--quiet",
                "--no-align",
                "--tuples-only",
                "--field-separator=\t",
                "--set=ON_ERROR_STOP=1",
            ],
            dbname=dbname,
        )
        self._process = _popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )

    def query(self, sql: str) -> list[list[str]]:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(f"{sql.strip().rstrip(';')};\n\\echo {self._marker}\n".encode())
            process.stdin.flush()
        except BrokenPipeError:
            raise self._failure() from None
        rows: list[list[str]] = []
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode().rstrip("\n")
            if line == self._marker:
                return rows
            rows.append(line.split("\t"))
        raise self._failure()

    def scalar(self, sql: str) -> str:
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise DataError(f"expected one value from the database, got {len(rows)} rows")
        return rows[0][0]

    def _failure(self) -> EngineError:
        self._process.wait()
        return EngineError(f"psql failed: {_last_error_line(self._stderr)}")

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def psql_session(executor: Executor, dbname: str) -> Iterator[PsqlSession]:
    session = PsqlSession(executor, dbname)
    try:
        yield session
    finally:
        session.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
