"""A build's version is a pair (logic version, rules version), named as the builds already running are named."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projections.board_store import BoardProjection
from projections.routing import RoutingRules
from projections.routing_store import RoutingProjection
from projections.rules import sales_rules_from_toml
from projections.scores_store import ScoresProjection
from projections.scoring import NO_RULES
from projections.sla_rules import SlaRules
from projections.sla_store import SlaProjection
from projections.velocity_store import VelocityProjection
from projections.versions import BuildVersion, build_name
from services.api.alerts import DEFAULT_BUILD as ALERTS_DEFAULT
from services.api.scores import DEFAULT_BUILD as SCORES_DEFAULT


def test_existing_builds_keep_their_names() -> None:
    assert SlaProjection(SlaRules()).build == "sla_v201" == ALERTS_DEFAULT  # v2: lapsed history, reassigned deadlines
    assert ScoresProjection(NO_RULES).build == "scores_v101" == SCORES_DEFAULT
    assert RoutingProjection(RoutingRules()).build == "routing_v101"
    assert BoardProjection().build == "board_v2" and VelocityProjection().build == "velocity_v1"
    assert SlaProjection(SlaRules(version=7), "rebuild").build == "sla_v207_rebuild"
    scoring = sales_rules_from_toml("[scoring]\nversion = 12\nthreshold = 1\nhalf_life_days = 1\n").scoring
    assert ScoresProjection(scoring).build == "scores_v112"


@given(st.integers(1, 9), st.integers(1, 99), st.integers(1, 9), st.integers(1, 99))
def test_different_pairs_name_different_builds(logic: int, rules: int, other_logic: int, other_rules: int) -> None:
    one, other = BuildVersion(logic, rules), BuildVersion(other_logic, other_rules)
    assert (one.number == other.number) == (one == other)
    assert build_name("sla", one.number) == f"sla_v{logic}{rules:02d}"


def test_a_fold_without_rules_is_named_by_its_logic_version_alone() -> None:
    assert BuildVersion(3).number == 3
