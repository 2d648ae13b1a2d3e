"""Token buckets per key (pure, a fake clock)."""

from __future__ import annotations

from agentkit.buckets import TokenBuckets


def test_a_bucket_gives_its_burst_then_its_rate_and_no_limit_at_zero():
    now = [100.0]
    b = TokenBuckets(10, burst=3, clock=lambda: now[0])
    assert [b.take("a") for _ in range(4)] == [True, True, True, False]
    assert b.take("b")  # each key its own bucket
    assert abs(b.wait("a") - 0.1) < 1e-9
    now[0] += 0.11
    assert b.take("a") and not b.take("a")
    assert all(TokenBuckets(0).take("x") for _ in range(10_000))


def test_the_table_of_buckets_is_bounded_and_new_keys_share_an_overflow_bucket():
    now = [100.0]
    b = TokenBuckets(1, burst=1, max_keys=3, clock=lambda: now[0])
    for key in "abc":
        assert b.take(key)
    assert b.take("d") and not b.take("e")  # a, b, c are in use: d and e share one bucket
    now[0] += 10  # every bucket full again: forgotten to make room
    assert b.take("f") and b.keys <= 4


def test_a_token_given_back_is_taken_again_and_never_beyond_the_burst():
    now = [100.0]
    b = TokenBuckets(1, burst=2, clock=lambda: now[0])
    assert b.take("a") and b.take("a") and not b.take("a")
    b.give("a")
    assert b.take("a") and not b.take("a")
    for _ in range(5):
        b.give("a")
    assert [b.take("a") for _ in range(3)] == [True, True, False]
    b.give("unknown")  # no bucket, nothing taken: nothing to give back
    assert b.keys == 1
