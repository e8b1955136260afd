"""What an account-level code means and what the operator does about it.

Beside :mod:`~bulk_sender.sending.outcome`, which classifies these codes as ``ACCOUNT`` (the run
stops): every code in its ``ACCOUNT_CODES`` has its advice here. Any other answer that stops the
run (a bare 401, a redirect) is explained by Kaleyra's own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ACCOUNT_ADVICE", "Advice", "account_advice"]


@dataclass(frozen=True, slots=True)
class Advice:
    """``what`` Kaleyra's code says is wrong, and what ``todo`` before running again."""

    what: str
    todo: str


#: Advice for each code in :data:`~bulk_sender.sending.outcome.ACCOUNT_CODES`.
ACCOUNT_ADVICE: Mapping[str, Advice] = MappingProxyType(
    {
        "E110": Advice("the balance is low", "Top up"),
        "WAV2101": Advice("the account's daily limit is used up", "Wait for the limit to reset"),
        "RBC001": Advice(
            "the SID or API key is wrong",
            "Check [kaleyra] sid and the key in the environment variable [kaleyra] api_key_env",
        ),
        "WA401": Advice(
            "the sender number is not on this account",
            "Check [kaleyra] sender against the numbers of your Kaleyra account",
        ),
        "WA-401": Advice(
            "the API is not available for this account or number", "Contact Kaleyra support"
        ),
    }
)


def account_advice(code: str, message: str) -> Advice:
    """The advice for ``code``; for a code without any, Kaleyra's ``message`` and "Fix it"."""
    return ACCOUNT_ADVICE.get(code) or Advice(message or "the account cannot send", "Fix it")
