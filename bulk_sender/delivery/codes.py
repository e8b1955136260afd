"""Pure: what Meta's and Kaleyra's failure codes mean, and whether sending again can help.

A message whose delivery failed was not delivered, so sending it again cannot give the customer
a second copy; the only question is whether a second attempt can succeed. :func:`resend`
answers it for one failed message, from its code and, for 131047, from when the customer last
wrote to the business number (the incoming messages the receiver stores).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bulk_sender.delivery.events import DeliveryStatus

__all__ = ["EXPLAINED", "WINDOW", "Explanation", "Resend", "explain", "resend"]

#: Meta's customer-service window: a session message needs a customer message this recent.
WINDOW: Final = timedelta(hours=24)


class Resend(enum.StrEnum):
    """Whether a failure is worth a second attempt."""

    YES = "yes"  #: a passing problem: send again
    LATER = "later"  #: send again, but not straight away (a day later)
    AFTER_REPLY = "after_reply"  #: only while the customer has written in the last 24 hours
    NO = "no"  #: sending again fails the same way, or must not be done


@dataclass(frozen=True, slots=True)
class Explanation:
    """A code in plain words, and whether sending again helps."""

    words: str
    resend: Resend


EXPLAINED: Final[dict[str, Explanation]] = {
    "131047": Explanation(
        "more than 24 hours since the customer last wrote; a catalog message is a session "
        "message and can only be sent within 24 hours of the customer's last message",
        Resend.AFTER_REPLY,
    ),
    "131026": Explanation(
        "the number cannot receive WhatsApp messages (no WhatsApp account, or an old app)",
        Resend.NO,
    ),
    "131049": Explanation(
        "Meta held it back to keep engagement healthy (limits on marketing messages per "
        "customer); try again a day or more later",
        Resend.LATER,
    ),
    "130429": Explanation(
        "the business number's sending rate limit was hit (Cloud API throughput)", Resend.YES
    ),
    "131050": Explanation(
        "the customer has stopped marketing messages from this business", Resend.NO
    ),
    "131056": Explanation(
        "too many messages to this customer in a short time (pair rate limit)", Resend.LATER
    ),
    "131000": Explanation("something went wrong at Meta", Resend.YES),
    "131016": Explanation("Meta's service was unavailable for a moment", Resend.YES),
    "131005": Explanation("access denied: the number's permissions are wrong", Resend.NO),
    "131008": Explanation("a required part of the message is missing", Resend.NO),
    "131009": Explanation("a part of the message has a value Meta does not accept", Resend.NO),
    "131021": Explanation("the recipient is the business number itself", Resend.NO),
    "131031": Explanation("the WhatsApp Business account is locked", Resend.NO),
    "131042": Explanation(
        "a payment problem on the WhatsApp Business account; fix it, then send again",
        Resend.NO,
    ),
    "131051": Explanation("WhatsApp does not support this kind of message", Resend.NO),
    "130472": Explanation("the customer's number is part of a Meta experiment", Resend.NO),
    "368": Explanation(
        "the business number is temporarily blocked for policy violations", Resend.NO
    ),
}


def explain(status: DeliveryStatus | None, code: str) -> Explanation:
    """What a failed or not-sent message's code means (a general sentence for unknown codes)."""
    if status is DeliveryStatus.NOT_SENT:
        words = "Kaleyra did not pass the message on to WhatsApp"
        known = EXPLAINED.get(code)
        return Explanation(f"{words} ({known.words})" if known else words, Resend.YES)
    known = EXPLAINED.get(code)
    if known is not None:
        return known
    return Explanation(f"WhatsApp failed it (code {code or 'not given'})", Resend.YES)


def resend(
    status: DeliveryStatus | None, code: str, *, last_wrote: str | None, now: datetime
) -> tuple[bool, str]:
    """Whether a failed message goes in the ``--failed`` export, and the words saying why.

    ``last_wrote`` is when the customer last wrote to the business number (ISO-8601), if ever.
    Codes marked :attr:`Resend.NO` are left out: the customer cannot receive it (131026), has
    opted out (131050), or the message or account itself is wrong. 131047 goes in only while
    the customer's last message is less than 24 hours old.
    """
    explanation = explain(status, code)
    decision = explanation.resend
    if decision is Resend.AFTER_REPLY:
        if last_wrote is None:
            return False, explanation.words
        wrote = datetime.fromisoformat(last_wrote)
        if now - wrote >= WINDOW:
            return False, explanation.words
        return True, f"{explanation.words}; the customer wrote at {last_wrote}: send it soon"
    return decision in (Resend.YES, Resend.LATER), explanation.words
