"""Keeping the dev stack's children running: each one that dies is started again after a growing pause."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger("dealstream.dev")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses before restarts: ``initial`` doubled per failure in a row, at most ``maximum``; a child that stayed
    up for ``stable_after`` seconds starts counting its failures afresh."""

    initial: float = 0.5
    maximum: float = 30.0
    stable_after: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.initial * 2.0 ** max(failures - 1, 0), self.maximum)


class Child(Protocol):
    """One supervised process: a server or a Dealstream process."""

    name: str
    log_file: Path | None

    def start(self) -> None: ...

    def exit_code(self) -> int | None:
        """None while it runs."""
        ...


@dataclass
class ProcessChild:
    """A ``dealstream`` process (the API, a worker), its output appended to ``log_file``."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_file: Path | None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.log_file is None:
            self.proc = subprocess.Popen(self.args, env=self.env)
            return
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


@dataclass
class ServerChild:
    """A server object of :mod:`devstack.servers` (nats-server, PostgreSQL) seen as a child."""

    name: str
    starter: Callable[[], object]
    process: Callable[[], subprocess.Popen[bytes] | None]
    log_file: Path | None = None

    def start(self) -> None:
        self.starter()

    def exit_code(self) -> int | None:
        proc = self.process()
        return None if proc is None else proc.poll()


@dataclass
class _Watched:
    child: Child
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Call :meth:`check` every few tenths of a second: a child found dead is logged and restarted after its
    backoff (its start failing counts as dying again)."""

    backoff: Backoff = field(default_factory=Backoff)
    watched: list[_Watched] = field(default_factory=list)

    def watch(self, child: Child, started_at: float) -> None:
        self.watched.append(_Watched(child, started_at=started_at))

    def restarts(self, name: str) -> int:
        return sum(w.restarts for w in self.watched if w.child.name == name)

    def check(self, now: float) -> None:
        for w in self.watched:
            if w.restart_at is None:
                code = w.child.exit_code()
                if code is None:
                    if now - w.started_at >= self.backoff.stable_after:
                        w.failures = 0
                    continue
                self._schedule(w, now, code=code)
            elif now >= w.restart_at:
                try:
                    w.child.start()
                except Exception as exc:
                    self._schedule(w, now, error=f"{type(exc).__name__}: {exc}")
                    continue
                w.restarts += 1
                w.started_at, w.restart_at = now, None
                log.warning("dev.child_restarted", child=w.child.name, restarts=w.restarts)

    def _schedule(self, w: _Watched, now: float, code: int | None = None, error: str | None = None) -> None:
        w.failures += 1
        delay = self.backoff.delay(w.failures)
        w.restart_at = now + delay
        where = str(w.child.log_file) if w.child.log_file else None
        if error is None:
            log.error("dev.child_exited", child=w.child.name, code=code, restart_in=delay, log=where)
        else:
            log.error("dev.child_restart_failed", child=w.child.name, error=error, restart_in=delay, log=where)
