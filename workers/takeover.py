"""Which build serves readers: a caught-up build takes over, a live one follows a rebuild of its version."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import psycopg

from projections.contract import Projection, Shard
from projections.versions import BuildRules, recorded_rules, serving_build, try_take_over


class Moved(Exception):
    """Readers moved to a rebuild of this version: this engine stops so its worker can follow."""


class TakeOver:
    """One shard's view of the builds of its projection: whether its own serves, who superseded it, where it moved.

    ``mode``: "live" takes over from a lower version and follows a same-version rebuild that took over;
    "rebuild" takes over from the same version once caught up; "shadow" never takes over nor follows."""

    def __init__(
        self,
        projection: Projection,
        shard: Shard,
        mode: Literal["live", "rebuild", "shadow"],
        rules: BuildRules | None,
        follows_rebuilds: bool,
    ) -> None:
        self.projection = projection
        self.shard = shard
        self.mode = mode
        self.rules = rules
        self.follows_rebuilds = follows_rebuilds
        self.serving = False
        self.superseded_by: str | None = None
        self.moved_to: str | None = None
        self.not_following: str | None = None
        self._next_check = 0.0

    async def check(self, pg: psycopg.AsyncConnection[Any], checkpoint: int, log: Any) -> None:
        """Switch readers to this build once all its shards have caught up with the serving one (checked at
        most once a second, when this shard has drained its backlog); notice when another build took over."""
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + 1.0
        p, mode = self.projection, self.mode
        # A projection with auto_switch = False (scores) waits for an operator to compare and switch.
        if not self.serving and mode != "shadow" and (getattr(p, "auto_switch", True) or mode == "rebuild"):
            replaced = await try_take_over(pg, p.name, p.build, p.version, self.shard.count, rebuild=mode == "rebuild")
            if replaced is not None:
                log.info("projection.switched", replaced=replaced.build, checkpoint=checkpoint)
        serving = await serving_build(pg, p.name)
        self.serving = serving is not None and serving.build == p.build
        if serving is None or self.serving or mode != "live":
            return
        if serving.version == p.version and self.follows_rebuilds:
            reason = await self._cannot_follow(pg, serving.build, serving.checkpoints)
            if reason is None:
                # A rebuild of this version took over: carry on in its tables, from its checkpoint.
                log.info("projection.following", build=serving.build)
                self.moved_to = serving.build
                raise Moved(serving.build)
            if self.not_following != serving.build:
                self.not_following = serving.build
                log.warning("projection.not_following", build=serving.build, reason=reason)
        if serving.version > p.version and self.superseded_by != serving.build:
            self.superseded_by = serving.build
            log.warning("projection.superseded", serving=serving.build, hint="stop this worker")

    async def _cannot_follow(
        self, pg: psycopg.AsyncConnection[Any], build: str, checkpoints: Mapping[str, int]
    ) -> str | None:
        """Why this shard must not carry on in ``build``'s tables, or None if it may."""
        if self.shard.key not in checkpoints:
            theirs_keys = ", ".join(sorted(checkpoints)) or "none"
            return (
                f"{build} has no checkpoint for shard {self.shard.key} (it has {theirs_keys}): this shard would "
                "apply from the start into its tables; rebuild with the workers' partitions"
            )
        theirs = await recorded_rules(pg, build)
        if self.rules is not None and self.rules.binding and theirs is not None and theirs.sha256 != self.rules.sha256:
            return f"{build} was made from {theirs.describe()}; this worker has {self.rules.describe()}"
        return None
