"""The caps' bookkeeping (contactcentre/edge/limits.py) on its own: what counts as one address, and the per-address
token bucket's memory staying bounded."""

from __future__ import annotations

import pytest

from contactcentre.edge import limits
from contactcentre.edge.limits import AddressBuckets, PeerCount, address_key


def test_an_ipv6_subscriber_is_one_address_however_many_it_uses() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::7") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7" == address_key("192.0.2.7")
    peers = PeerCount(2)
    assert peers.acquire("2001:db8::1") and peers.acquire("2001:db8::2")
    assert not peers.acquire("2001:db8::3")  # the same /64
    assert peers.acquire("2001:db8:0:1::1")
    peers.release("2001:db8::1")
    assert peers.acquire("2001:db8::9")


def test_the_bucket_table_stays_bounded_under_a_spread_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_TRACKED_ADDRESSES", 100)
    buckets = AddressBuckets(rate_per_s=0.001, burst=1)
    for i in range(1000):
        assert buckets.take(f"10.0.{i // 256}.{i % 256}", now=0.0)  # each a new address, its bucket now empty
        assert len(buckets) <= 100
    assert not buckets.take("10.0.3.231", now=0.0)  # a recent one is still remembered and still refused
