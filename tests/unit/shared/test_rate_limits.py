"""The per-client token bucket: bounded, and a flood of new clients never resets a busy one's budget."""

from shared.security import RateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_new_clients_never_gives_a_busy_client_its_budget_back():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock, max_clients=50)
    assert [limiter.take("sub:busy").wait == 0 for _ in range(4)] == [True, True, True, False]
    for n in range(10_000):  # distinct keys, as a forger with many addresses would send
        limiter.take(f"ip:10.0.{n // 256}.{n % 256}")
        if n % 40 == 0:
            assert limiter.take("sub:busy").wait > 0  # still throttled: the busy client was never forgotten
    assert len(limiter) <= 50


def test_a_bucket_refills_at_the_rate_and_says_what_is_left():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    first = limiter.take("sub:a")
    assert (first.wait, first.remaining, first.limit) == (0.0, 1, 2)
    limiter.take("sub:a")
    refused = limiter.take("sub:a")
    assert refused.wait == 1.0 and refused.remaining == 0
    clock.now = 1.0
    assert limiter.take("sub:a").wait == 0.0
