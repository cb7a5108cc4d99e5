"""The balancer's deployment descriptor reads what a fleet and its traffic are, never what they are called."""

from __future__ import annotations

import numpy as np
import pytest

from aiprim import primitives
from tests.unit.renaming import renamed


def test_renaming_and_reordering_leave_the_descriptor_unchanged(balancer_tables):
    from aiprim.primitives.balancer._descriptor import FIELDS

    balancer = primitives.get("balancer")
    original = balancer.describe_deployment(balancer_tables)
    assert original.shape == (len(FIELDS),) and np.isfinite(original).all()
    other_names = renamed(balancer_tables)
    assert set(other_names["servers"]["server_class"]).isdisjoint(balancer_tables["servers"]["server_class"])
    np.testing.assert_allclose(balancer.describe_deployment(other_names), original, rtol=1e-9, atol=1e-12)


def test_what_the_deployment_is_moves_the_descriptor(balancer_tables):
    from aiprim.primitives.balancer._descriptor import FIELDS
    from aiprim.primitives.balancer._source import generate

    balancer = primitives.get("balancer")
    base = dict(zip(FIELDS, balancer.describe_deployment(balancer_tables)))
    bigger = dict(zip(FIELDS, balancer.describe_deployment(
        generate({"servers": 96, "requests": 30000, "keys": 6000, "zipf_offset": 200}, seed=7))))
    assert bigger["log_servers"] == pytest.approx(np.log(96)) and base["log_servers"] == pytest.approx(np.log(24))
    flatter = dict(zip(FIELDS, balancer.describe_deployment(
        generate({"servers": 24, "requests": 30000, "keys": 6000, "zipf_offset": 200, "zipf_exponent": 0.3}, seed=7))))
    assert flatter["zipf_slope"] < base["zipf_slope"] and flatter["top_1pct_unit_share"] < base["top_1pct_unit_share"]


def test_a_primitive_that_does_not_opt_in_says_so():
    from aiprim.primitives._base import TransferNotSupported

    query = primitives.get("query")
    assert not query.supports_transfer and primitives.get("balancer").supports_transfer
    with pytest.raises(TransferNotSupported, match="query does not opt in to transfer"):
        query.describe_deployment({})
