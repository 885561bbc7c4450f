"""The private PostgreSQL's pre-flight check: as root it runs as another user, who must reach its folder."""

from __future__ import annotations

import pwd
import tempfile
from pathlib import Path

import pytest

from devstack.servers import LocalStackError, _check_reachable


def test_a_folder_the_postgres_user_cannot_enter_is_named_with_the_way_out() -> None:
    nobody = pwd.getpwnam("nobody")
    # Not pytest's tmp_path: its base folder is closed to others, which is the very case under test.
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        Path(base).chmod(0o755)
        closed = Path(base) / "closed"
        inner = closed / "checkout"
        inner.mkdir(parents=True)
        closed.chmod(0o700)
        with pytest.raises(LocalStackError, match=r"'nobody' cannot enter .*closed \(mode 700\).*--data-dir"):
            _check_reachable(inner, nobody)
        closed.chmod(0o711)
        _check_reachable(inner, nobody)
