"""The retry policy: how many attempts each outcome gets, and the backoff between them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.config import Delivery
from bulk_sender.model import Status
from bulk_sender.sending.outcome import Kind, Outcome
from bulk_sender.sending.policy import Decision, Final, Retry, RetryPolicy, Stop, backoff
from tests.strategies_http import outcomes

max_attempts = st.integers(min_value=1, max_value=20)
deliveries: st.SearchStrategy[Delivery] = st.sampled_from(["at-most-once", "at-least-once"])
randoms = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
delays = st.floats(min_value=0.0, max_value=100.0)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    """Any valid policy."""
    base = draw(delays)
    return RetryPolicy(
        max_attempts=draw(max_attempts),
        delivery=draw(deliveries),
        base_delay=base,
        max_delay=draw(st.floats(min_value=base, max_value=1000.0)),
    )


def attempts_until_final(
    policy: RetryPolicy, outcome: Outcome, random: float
) -> tuple[int, Decision]:
    """Feed ``outcome`` to the policy after every attempt, as the engine does, until it stops."""
    errors = throttles = 0
    for attempt in range(1, 1000):
        if outcome.kind is Kind.THROTTLED:
            throttles += 1
        else:
            errors += 1
        decision = policy.decide(outcome, errors=errors, throttles=throttles, random=random)
        if not isinstance(decision, Retry):
            return attempt, decision
        assert 0.0 <= decision.delay <= max(policy.max_delay, outcome.retry_after or 0.0)
    raise AssertionError("the policy never stopped retrying")


@given(policy=policies(), data=st.data(), random=randoms)
@pytest.mark.parametrize("kind", [Kind.SERVER_ERROR, Kind.NOT_SENT_YET])
def test_retryable_errors_get_exactly_max_attempts(
    kind: Kind, policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """A row that always fails retryably is attempted exactly max_attempts times, then failed."""
    outcome = data.draw(outcomes(kind))
    count, decision = attempts_until_final(policy, outcome, random)
    assert count == policy.max_attempts
    assert decision == Final(Status.FAILED)


@given(policy=policies(), data=st.data(), random=randoms)
def test_throttled_gets_its_own_budget(
    policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """A row throttled every time is attempted exactly max_attempts times, then failed."""
    count, decision = attempts_until_final(policy, data.draw(outcomes(Kind.THROTTLED)), random)
    assert count == policy.max_attempts
    assert decision == Final(Status.FAILED)


@given(policy=policies(), data=st.data(), random=randoms)
def test_throttles_do_not_use_up_the_error_budget(
    policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """After any number of throttles below the budget, a server error is still retried."""
    throttles = data.draw(st.integers(min_value=0, max_value=policy.max_attempts - 1))
    error = data.draw(outcomes(Kind.SERVER_ERROR))
    decision = policy.decide(error, errors=1, throttles=throttles, random=random)
    if policy.max_attempts == 1:
        assert decision == Final(Status.FAILED)
    else:
        assert isinstance(decision, Retry)


@given(policy=policies(), data=st.data(), random=randoms)
def test_errors_do_not_use_up_the_throttle_budget(
    policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """After any number of errors, a first 429 is still retried when the budget allows."""
    errors = data.draw(st.integers(min_value=0, max_value=50))
    throttle = data.draw(outcomes(Kind.THROTTLED))
    decision = policy.decide(throttle, errors=errors, throttles=1, random=random)
    assert isinstance(decision, Retry) == (policy.max_attempts > 1)


@given(policy=policies(), data=st.data(), random=randoms)
def test_ambiguous_at_most_once_is_never_retried(
    policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """At-most-once, an AMBIGUOUS attempt ends the row as unknown at once."""
    at_most_once = RetryPolicy(
        max_attempts=policy.max_attempts,
        base_delay=policy.base_delay,
        max_delay=policy.max_delay,
    )
    count, decision = attempts_until_final(
        at_most_once, data.draw(outcomes(Kind.AMBIGUOUS)), random
    )
    assert (count, decision) == (1, Final(Status.UNKNOWN))


@given(policy=policies(), data=st.data(), random=randoms)
def test_ambiguous_at_least_once_retries_then_unknown(
    policy: RetryPolicy, data: st.DataObject, random: float
) -> None:
    """At-least-once, an AMBIGUOUS row is retried up to max_attempts, then ends unknown."""
    at_least_once = RetryPolicy(
        max_attempts=policy.max_attempts,
        delivery="at-least-once",
        base_delay=policy.base_delay,
        max_delay=policy.max_delay,
    )
    count, decision = attempts_until_final(
        at_least_once, data.draw(outcomes(Kind.AMBIGUOUS)), random
    )
    assert (count, decision) == (policy.max_attempts, Final(Status.UNKNOWN))


@given(
    policy=policies(),
    data=st.data(),
    errors=st.integers(min_value=0, max_value=200),
    throttles=st.integers(min_value=0, max_value=200),
    random=randoms,
)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (Kind.SENT, Final(Status.SENT)),
        (Kind.ROW_FAILED, Final(Status.FAILED)),
        (Kind.ACCOUNT, Stop()),
        (Kind.ENDPOINT, Stop()),
    ],
)
def test_terminal_kinds_end_at_once(
    kind: Kind,
    expected: Decision,
    policy: RetryPolicy,
    data: st.DataObject,
    errors: int,
    throttles: int,
    random: float,
) -> None:
    """SENT is sent, ROW_FAILED is failed, ACCOUNT and ENDPOINT stop the run, whatever the
    counters."""
    outcome = data.draw(outcomes(kind))
    assert policy.decide(outcome, errors=errors, throttles=throttles, random=random) == expected


@given(
    retry_after=st.floats(min_value=0.0, max_value=120.0),
    throttles=st.integers(min_value=1, max_value=4),
    random=randoms,
)
def test_retry_after_wins_over_backoff(retry_after: float, throttles: int, random: float) -> None:
    """A 429's Retry-After is the delay, whatever backoff would have said."""
    outcome = Outcome(Kind.THROTTLED, 429, retry_after=retry_after)
    decision = RetryPolicy(max_attempts=5).decide(
        outcome, errors=0, throttles=throttles, random=random
    )
    assert decision == Retry(retry_after)


@given(throttles=st.integers(min_value=1, max_value=4), random=randoms)
def test_throttle_without_retry_after_backs_off(throttles: int, random: float) -> None:
    """A 429 without Retry-After waits the backoff for its throttle count."""
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=30.0)
    decision = policy.decide(
        Outcome(Kind.THROTTLED, 429), errors=0, throttles=throttles, random=random
    )
    assert decision == Retry(backoff(throttles, random, base_delay=0.5, max_delay=30.0))


@given(errors=st.integers(min_value=1, max_value=4), random=randoms)
def test_server_error_backs_off_by_error_count(errors: int, random: float) -> None:
    """A server error waits the backoff for the row's error count, ignoring Retry-After."""
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=30.0)
    outcome = Outcome(Kind.SERVER_ERROR, 500, retry_after=99.0)
    decision = policy.decide(outcome, errors=errors, throttles=0, random=random)
    assert decision == Retry(backoff(errors, random, base_delay=0.5, max_delay=30.0))


# --------------------------------------------------------------------------- backoff


def cap(n: int, base: float, top: float) -> float:
    """The documented exponential step for the n-th retry."""
    return min(top, base * 2.0 ** (n - 1))


@given(
    n=st.integers(min_value=1, max_value=1000),
    random=randoms,
    base=delays,
    extra=delays,
)
def test_backoff_is_within_half_cap_and_cap(
    n: int, random: float, base: float, extra: float
) -> None:
    """The n-th delay is in [cap/2, cap] with cap = min(max_delay, base * 2**(n-1))."""
    top = base + extra
    delay = backoff(n, random, base_delay=base, max_delay=top)
    step = cap(n, base, top)
    assert step / 2 <= delay <= step <= top


@given(n=st.integers(min_value=1, max_value=1000), base=delays, extra=delays)
def test_backoff_cap_never_decreases(n: int, base: float, extra: float) -> None:
    """The longest possible delay never shrinks from one retry to the next."""
    top = base + extra
    longest = [backoff(k, 1.0, base_delay=base, max_delay=top) for k in (n, n + 1)]
    assert longest[0] <= longest[1] <= top


def test_backoff_examples() -> None:
    """The documented formula, checked at its edges: 0.5 s base doubles and stops at 30 s."""
    kw = {"base_delay": 0.5, "max_delay": 30.0}
    assert [backoff(n, 0.0, **kw) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]
    assert [backoff(n, 0.5, **kw) for n in (1, 7, 8, 50)] == [0.375, 22.5, 22.5, 22.5]
    assert backoff(0, 0.0, **kw) == 0.25


def test_backoff_for_huge_retry_number_is_capped() -> None:
    """Even the 1025th retry waits at most max_delay."""
    assert backoff(1025, 0.5, base_delay=0.5, max_delay=30.0) <= 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay": -1.0}, {"base_delay": 5.0, "max_delay": 1.0}],
)
def test_policy_rejects_impossible_settings(kwargs: dict[str, float]) -> None:
    """A policy with no attempts or a negative or inverted delay range is refused."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
