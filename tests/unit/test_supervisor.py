"""The dev stack's supervisor: a dead child is logged and started again after a pause that grows while it keeps
dying, and resets once it stays up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog
from hypothesis import given
from hypothesis import strategies as st

from devstack.supervisor import Backoff, Supervisor


@dataclass
class FakeChild:
    """A child whose death the test decides; starting it may fail."""

    name: str = "worker-board"
    log_file: Path | None = None
    code: int | None = None
    starts: int = 0
    fail_starts: int = 0
    events: list[str] = field(default_factory=list)

    def start(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port in use")
        self.starts += 1
        self.code = None

    def exit_code(self) -> int | None:
        return self.code


def test_a_killed_child_is_restarted_after_its_backoff_and_it_is_logged() -> None:
    child = FakeChild()
    supervisor = Supervisor(Backoff(initial=1.0, maximum=8.0, stable_after=60.0))
    supervisor.watch(child, started_at=0.0)
    with structlog.testing.capture_logs() as logs:
        supervisor.check(1.0)
        assert child.starts == 0
        child.code = -9
        supervisor.check(2.0)  # found dead: restart in 1 s
        supervisor.check(2.5)
        assert child.starts == 0
        supervisor.check(3.0)
        assert child.starts == 1 and supervisor.restarts("worker-board") == 1
        child.code = -9
        supervisor.check(4.0)  # dead again at once: 2 s this time
        supervisor.check(5.5)
        assert child.starts == 1
        supervisor.check(6.0)
        assert child.starts == 2
    events = [(e["event"], e.get("code"), e.get("restart_in")) for e in logs]
    assert events == [
        ("dev.child_exited", -9, 1.0),
        ("dev.child_restarted", None, None),
        ("dev.child_exited", -9, 2.0),
        ("dev.child_restarted", None, None),
    ]


def test_a_child_that_stayed_up_starts_its_backoff_afresh_and_a_failed_start_counts_as_dying() -> None:
    child = FakeChild(fail_starts=1)
    supervisor = Supervisor(Backoff(initial=1.0, maximum=8.0, stable_after=10.0))
    supervisor.watch(child, started_at=0.0)
    child.code = 1
    supervisor.check(1.0)  # restart at 2
    supervisor.check(2.0)  # the start fails: next at 2 + 2
    assert child.starts == 0
    supervisor.check(4.0)
    assert child.starts == 1
    supervisor.check(20.0)  # up for 16 s: stable
    child.code = 1
    with structlog.testing.capture_logs() as logs:
        supervisor.check(21.0)
    assert logs[0]["restart_in"] == 1.0


@given(st.integers(1, 40))
def test_the_pause_doubles_up_to_its_maximum(failures: int) -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    assert backoff.delay(failures) == min(0.5 * 2 ** (failures - 1), 30.0)
    assert backoff.delay(failures + 1) >= backoff.delay(failures)
