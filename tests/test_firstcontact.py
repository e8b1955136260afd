"""FirstContact: connect failures before anything reached the server stop the run; after, not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_sender.model import Status
from bulk_sender.sending.firstcontact import FIRST_CONTACT_ATTEMPTS, FirstContact
from bulk_sender.sending.outcome import Kind, Outcome
from bulk_sender.sending.policy import Final, RetryPolicy, Stop

REFUSED = Outcome(Kind.NOT_SENT_YET, None, "CONNECT_ERROR", "cannot connect: Connection refused")
NO_NAME = Outcome(Kind.NOT_SENT_YET, None, "DNS_ERROR", "cannot resolve api.x.test: not known")
SENT = Outcome(Kind.SENT, 202, "WA202", "", "m-1")
SERVER_ERROR = Outcome(Kind.SERVER_ERROR, 500, "WA500", "try later")
LOST = Outcome(Kind.AMBIGUOUS, None, "NO_ANSWER", "read timeout")


def kinds(rule: FirstContact, outcomes: list[Outcome]) -> list[Kind]:
    """The kinds ``rule`` makes of ``outcomes``, judged in order."""
    return [rule.judge(outcome).kind for outcome in outcomes]


def test_three_failed_connections_from_the_start_stop_the_run() -> None:
    """The third connect failure with no contact before it becomes ENDPOINT, and so do later
    ones; the first two stay retryable."""
    rule = FirstContact.for_attempts(5)
    assert kinds(rule, [REFUSED, NO_NAME, REFUSED, REFUSED]) == [
        Kind.NOT_SENT_YET,
        Kind.NOT_SENT_YET,
        Kind.ENDPOINT,
        Kind.ENDPOINT,
    ]


def test_the_stop_keeps_the_code_and_counts_the_attempts() -> None:
    """The ENDPOINT outcome keeps the failure's code and description, adding the count."""
    rule = FirstContact.for_attempts(3)
    *_, last = [rule.judge(NO_NAME) for _ in range(3)]
    assert last.code == "DNS_ERROR"
    assert last.error.startswith(NO_NAME.error + "; nothing has reached the server")
    assert last.error.endswith("(3 attempts failed to connect)")


@pytest.mark.parametrize("contact", [SENT, SERVER_ERROR, LOST], ids=["sent", "500", "lost"])
def test_after_a_contact_connect_failures_are_only_row_errors(contact: Outcome) -> None:
    """Once anything reached the server (an answer, or a request that left), connect
    failures stay NOT_SENT_YET however many follow."""
    rule = FirstContact.for_attempts(5)
    outcomes = [REFUSED, contact, *[REFUSED] * 20]
    assert Kind.ENDPOINT not in kinds(rule, outcomes)


@pytest.mark.parametrize(("max_attempts", "limit"), [(1, 1), (2, 2), (3, 3), (5, 3), (100, 3)])
def test_the_limit_never_exceeds_a_rows_attempts(max_attempts: int, limit: int) -> None:
    """The limit is FIRST_CONTACT_ATTEMPTS, or max_attempts when that is fewer."""
    assert FIRST_CONTACT_ATTEMPTS == 3
    assert FirstContact.for_attempts(max_attempts).limit == limit


@given(
    max_attempts=st.integers(min_value=1, max_value=10),
    rows=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=40),
)
def test_no_row_fails_on_connect_errors_before_a_contact(
    max_attempts: int, rows: list[int]
) -> None:
    """Whatever the interleaving of rows, when every attempt fails to connect, no row ends
    failed: the policy stops the run before any row uses up its attempts."""
    rule = FirstContact.for_attempts(max_attempts)
    policy = RetryPolicy(max_attempts=max_attempts)
    errors: dict[int, int] = {}
    for row in rows:  # each entry: one attempt of that row ends in a connect failure
        errors[row] = errors.get(row, 0) + 1
        decision = policy.decide(rule.judge(REFUSED), errors=errors[row], throttles=0, random=0.5)
        assert decision != Final(Status.FAILED)
        if isinstance(decision, Stop):
            break
