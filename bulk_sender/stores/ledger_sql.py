"""The audience ledger's SQL, written once for every backend.

Plain SQL that SQLite (3.24+) and PostgreSQL both run: ``WITH ... VALUES``, ``INSERT ...
SELECT ... ON CONFLICT`` on a partial unique index, row values. A backend fills
in the few words that differ (:class:`LedgerDialect`).

Tables:

``ledger_meta``  key/value: the schema version
``campaigns``    one row per campaign journal that ever took a slot: its id, key, shown name
``recipients``   one row per recipient with an opt-out, an opt-in or a message from them:
                 ``opted_out`` (0/1) as of ``opt_at``, ``opt_by``, ``last_incoming``
``sends``        one row per message given a slot: recipient, time, content hash, campaign,
                 row and part. A message has one row at most (its primary key), so taking it
                 again (a resume) renews it (``renewed``) instead of adding one. A slot is
                 kept unless given back (:func:`release`), which only a slot never renewed
                 can be: an earlier run's attempt at the same message may have arrived.

**Taking a slot is one conditional insert** (:func:`take`): for each message, insert its
``taken`` row only if the recipient is not opted out, no row of the same content is newer than
the repeat guard's bound, fewer than the cap's rows are newer than the cap's bound, and (with
``service_window = "skip"``) the customer wrote after the window's bound. The statement's
count of rows changed says whether all got in; if not, :func:`taken_now` says which. The rules
read rows of ``sends`` other than the message's own.
:func:`screen` is the same predicate (:func:`_allowed`), read only, for a batch at once (it
counts a message's own earlier slot too: whoever screens re-judges what it returns). Two takes
for the same recipient must not interleave:

* SQLite: every write transaction holds the database's write lock (``BEGIN IMMEDIATE``, or a
  lone write statement in autocommit mode, which takes it as it starts), so takes from every
  process are serialised by the database itself.
* PostgreSQL: the same statement, run after ``SELECT pg_advisory_xact_lock(r) FROM
  unnest(...) r ORDER BY r`` on the batch's recipients (:attr:`LedgerDialect.lock_recipients`;
  sorted, so two batches never deadlock). The lock is held to the commit, and under READ
  COMMITTED each statement sees what committed before it, so the second taker's insert counts
  the first one's row.

An insert does not see the rows it adds itself, so a backend runs one statement per *round*
of messages with distinct recipients (:func:`rounds`); rounds in one transaction see each
other.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bulk_sender.stores.ledger import TakeRequest

__all__ = [
    "SCREEN_COLUMNS",
    "TAKE_COLUMNS",
    "LedgerDialect",
    "absent_bounds",
    "change_opt",
    "explain_opt",
    "explain_sends",
    "note_incoming",
    "register_campaign",
    "release",
    "rounds",
    "schema",
    "screen",
    "take",
    "take_params",
]

#: A take request's columns, in statement order.
TAKE_COLUMNS: Final = (
    "recipient", "content", "campaign", "msg_row", "msg_part", "at",
    "repeat_since", "cap_since", "cap", "window_since",
)  # fmt: skip
#: Where the bounds begin in :data:`TAKE_COLUMNS` (a request's first fields come before).
_BOUNDS_AT: Final = 6


@dataclass(frozen=True, slots=True)
class LedgerDialect:
    """The words a backend spells its own way."""

    key_type: str  #: a 64-bit integer
    serial_key: str  #: an auto-numbered integer primary key
    without_rowid: str  #: appended to tables clustered on their primary key (SQLite)
    mark: str  #: the parameter placeholder
    greatest: str  #: the two-argument maximum: ``MAX`` (SQLite) or ``GREATEST`` (PostgreSQL)
    group_concat: str  #: integers joined by commas: ``group_concat`` / ``string_agg`` (PG)
    lock_recipients: str | None = None  #: a statement locking the batch's recipients, if needed
    #: Rows come as one array parameter per column (``unnest``: one prepared statement for any
    #: number of rows, PostgreSQL), not as ``VALUES`` of one parameter per value (SQLite).
    arrays: bool = False


def _source(d: LedgerDialect, columns: Sequence[str], count: int) -> str:
    """The rows of a ``WITH name (columns) AS (...)``: ``count`` rows of ``VALUES``, or (with
    :attr:`LedgerDialect.arrays`) ``unnest`` of one array per column (integers, but for a
    column called ``number``: text), whatever the count."""
    if d.arrays:
        arrays = (f"{d.mark}::{'text' if c == 'number' else d.key_type}[]" for c in columns)
        return f"SELECT * FROM unnest({', '.join(arrays)})"
    row = "(" + ", ".join([d.mark] * len(columns)) + ")"
    return f"VALUES {', '.join([row] * count)}"


def _integer(d: LedgerDialect) -> str:
    """One integer parameter (typed where the database would otherwise guess text)."""
    return f"{d.mark}::{d.key_type}" if d.arrays else d.mark


def schema(d: LedgerDialect) -> list[str]:
    """The statements that create the ledger's tables (idempotent)."""
    big = d.key_type
    return [
        "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS campaigns (
            id {d.serial_key},
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            started_at {big} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS recipients (
            recipient {big} PRIMARY KEY,
            opted_out INTEGER NOT NULL DEFAULT 0,
            opt_at {big} NOT NULL DEFAULT 0,
            opt_by TEXT NOT NULL DEFAULT '',
            last_incoming {big}
        )""",
        f"""CREATE TABLE IF NOT EXISTS sends (
            campaign {big} NOT NULL,
            msg_row {big} NOT NULL,
            msg_part INTEGER NOT NULL,
            recipient {big} NOT NULL,
            at {big} NOT NULL,
            content {big} NOT NULL,
            renewed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (campaign, msg_row, msg_part)
        ){d.without_rowid}""",
        # Every rule's lookup, answered from the index alone (it holds the primary key too).
        "CREATE INDEX IF NOT EXISTS sends_by_recipient ON sends (recipient, at, content)",
        "CREATE INDEX IF NOT EXISTS recipients_opted_out ON recipients (opted_out)"
        " WHERE opted_out = 1",
    ]


def register_campaign(d: LedgerDialect) -> str:
    """Insert or rename a campaign; returns its id."""
    m = d.mark
    return (
        f"INSERT INTO campaigns (key, name, started_at) VALUES ({m}, {m}, {m})"
        " ON CONFLICT (key) DO UPDATE SET name = excluded.name RETURNING id"
    )


_OTHER: Final = (
    "NOT (s.campaign = r.campaign AND s.msg_row = r.msg_row AND s.msg_part = r.msg_part)"
)


def _allowed(b: str, *, other: str = _OTHER) -> str:
    """The rules' predicate for a message ``r``, with the bounds in columns of ``b``: true if no
    rule holds it back. The take and the screen are both this one predicate; ``other`` says
    which sends count (the take: every one but the message's own slot)."""
    return f"""NOT EXISTS (
                SELECT 1 FROM recipients o WHERE o.recipient = r.recipient AND o.opted_out = 1)
          AND ({b}.repeat_since IS NULL OR NOT EXISTS (
                SELECT 1 FROM sends s
                WHERE s.recipient = r.recipient AND s.at > {b}.repeat_since
                  AND s.content = r.content AND {other}))
          AND ({b}.cap IS NULL OR (
                SELECT COUNT(*) FROM sends s
                WHERE s.recipient = r.recipient AND s.at > {b}.cap_since AND {other}) < {b}.cap)
          AND ({b}.window_since IS NULL OR EXISTS (
                SELECT 1 FROM recipients o
                WHERE o.recipient = r.recipient AND o.last_incoming > {b}.window_since))"""


@functools.cache
def take(d: LedgerDialect, count: int, absent: tuple[int, ...] = ()) -> str:
    """The conditional insert of ``count`` messages' slots (see the module docstring).

    ``absent``: the positions in :attr:`TakeRequest.bounds` of the rules that are off for every
    message (:func:`absent_bounds`), written as NULL rather than bound: binding None costs the
    sqlite3 module two failed attribute lookups a value, more than the rest of the binding.
    """
    # It begins with INSERT, the WITH inside: Python's sqlite3 counts the rows changed only for
    # a statement that begins with INSERT, UPDATE, DELETE or REPLACE.
    if d.arrays:  # every column an array: an absent rule's bound is an array of NULLs
        rows = _source(d, TAKE_COLUMNS, count)
    else:
        null = f"CAST(NULL AS {d.key_type})"
        marks = [null if i - _BOUNDS_AT in absent else d.mark for i in range(len(TAKE_COLUMNS))]
        row = "(" + ", ".join(marks) + ")"
        rows = f"VALUES {', '.join([row] * count)}"
    return f"""INSERT INTO sends (recipient, at, content, campaign, msg_row, msg_part)
        WITH r ({", ".join(TAKE_COLUMNS)}) AS ({rows})
        SELECT r.recipient, r.at, r.content, r.campaign, r.msg_row, r.msg_part
        FROM r
        WHERE {_allowed("r")}
        ON CONFLICT (campaign, msg_row, msg_part)
        DO UPDATE SET at = excluded.at, content = excluded.content, renewed = 1"""


@functools.cache
def taken_now(d: LedgerDialect, count: int) -> str:
    """Which of ``count`` takes got in, when not all did: the slots that carry the take's
    recipient and own time (a refused renewal keeps its old time), as ``campaign:row:part``
    joined by commas.

    One answer row, not one per slot (``RETURNING``): each row a statement yields makes the
    sqlite3 module give the GIL back and wait for it while the sending loop is busy.
    """
    return f"""WITH {_keys(d, count, "recipient", "at")}
        SELECT {d.group_concat}(s.campaign || ':' || s.msg_row || ':' || s.msg_part)
        FROM k JOIN sends s ON {_BY_MESSAGE} AND s.recipient = k.recipient AND s.at = k.at"""


def absent_bounds(requests: Sequence[TakeRequest]) -> tuple[int, ...]:
    """The positions of the bounds that are None in every one of ``requests`` (rules off)."""
    return tuple(
        i for i in range(len(TAKE_COLUMNS) - _BOUNDS_AT)
        if all(q.bounds[i] is None for q in requests)
    )  # fmt: skip


def take_params(requests: Sequence[TakeRequest], absent: tuple[int, ...] = ()) -> list[object]:
    """The flat parameters of :func:`take` for ``requests``: a request's six first fields, then
    its bounds but the ``absent`` ones, are :data:`TAKE_COLUMNS` in order (tuples joined in C,
    no Python per field)."""
    if not absent:
        return list(itertools.chain.from_iterable(q[:_BOUNDS_AT] + q.bounds for q in requests))
    kept = [i for i in range(len(TAKE_COLUMNS) - _BOUNDS_AT) if i not in absent]
    return list(
        itertools.chain.from_iterable(
            q[:_BOUNDS_AT] + tuple(q.bounds[i] for i in kept) for q in requests
        )
    )


#: A screened message's columns, in statement order (the bounds are the statement's own); the
#: number is E.164 text, read as the recipient's integer by the database (C, not Python).
SCREEN_COLUMNS: Final = ("idx", "number", "content")


@functools.cache
def screen(d: LedgerDialect, count: int, *, answer: str) -> str:
    """The take's predicate, read only, over ``count`` messages: the ones the rules hold back
    now are the rows ``held (idx, recipient)``, which the backend's ``answer`` (a ``SELECT``
    over ``held`` and ``b``, the bounds) turns into one answer row with their facts. Every send
    counts, a message's own earlier slot too: the caller, judging the facts, leaves it out.

    Parameters: the bounds ``repeat_since, cap_since, cap, window_since`` and ``reach`` (the
    oldest send any rule looks at), then ``idx, number, content`` for each message.
    """
    i = _integer(d)
    return f"""WITH b (repeat_since, cap_since, cap, window_since, reach) AS (
            VALUES ({i}, {i}, {i}, {i}, {i})),
        v ({", ".join(SCREEN_COLUMNS)}) AS ({_source(d, SCREEN_COLUMNS, count)}),
        r AS (SELECT idx, CAST(substr(number, 2) AS {d.key_type}) AS recipient, content FROM v),
        held AS (SELECT r.idx, r.recipient FROM r, b WHERE NOT ({_allowed("b", other="1 = 1")}))
        {answer}"""


def rounds(requests: Sequence[TakeRequest]) -> list[list[TakeRequest]]:
    """``requests`` in rounds in which no recipient appears twice, in order."""
    out: list[list[TakeRequest]] = []
    last_round: dict[int, int] = {}
    for request in requests:
        index = last_round.get(request.recipient, -1) + 1
        if index == len(out):
            out.append([])
        out[index].append(request)
        last_round[request.recipient] = index
    return out


def explain_opt(d: LedgerDialect) -> str:
    """A recipient's opt-out and last message, for a refused take."""
    return (
        "SELECT opted_out, opt_at, opt_by, last_incoming FROM recipients"
        f" WHERE recipient = {d.mark}"
    )


def explain_sends(d: LedgerDialect) -> str:
    """A recipient's sends after a bound, other than one message's own, for a refused take."""
    m = d.mark
    return f"""SELECT s.at, s.content, c.name FROM sends s JOIN campaigns c ON c.id = s.campaign
        WHERE s.recipient = {m} AND s.at > {m}
          AND NOT (s.campaign = {m} AND s.msg_row = {m} AND s.msg_part = {m})"""


@functools.cache
def release(d: LedgerDialect, count: int) -> str:
    """Give back ``count`` messages' slots, unless renewed (see the module docstring)."""
    return f"""DELETE FROM sends WHERE renewed = 0 AND (campaign, msg_row, msg_part) IN (
        WITH {_keys(d, count)} SELECT campaign, msg_row, msg_part FROM k)"""


#: A message's slot, found through the primary key (campaign, msg_row, msg_part).
_BY_MESSAGE: Final = "s.campaign = k.campaign AND s.msg_row = k.msg_row AND s.msg_part = k.msg_part"


def _keys(d: LedgerDialect, count: int, *extra: str) -> str:
    """``k (campaign, msg_row, msg_part, *extra) AS (VALUES ...)`` for ``count`` messages."""
    columns = ("campaign", "msg_row", "msg_part", *extra)
    return f"k ({', '.join(columns)}) AS ({_source(d, columns, count)})"


def change_opt(d: LedgerDialect) -> str:
    """Apply one opt-out or opt-in unless the recipient's state changed later.

    A change at the very same moment as the state in force wins only if it opts out (the safe
    side), so applying the same change twice changes nothing the second time.
    """
    m = d.mark
    return f"""INSERT INTO recipients (recipient, opted_out, opt_at, opt_by)
        VALUES ({m}, {m}, {m}, {m})
        ON CONFLICT (recipient) DO UPDATE SET
            opted_out = excluded.opted_out, opt_at = excluded.opt_at, opt_by = excluded.opt_by
        WHERE excluded.opt_at > recipients.opt_at
           OR (excluded.opt_at = recipients.opt_at AND excluded.opted_out > recipients.opted_out)"""


def note_incoming(d: LedgerDialect) -> str:
    """Record that a customer wrote at a time (the latest time is kept)."""
    m = d.mark
    return f"""INSERT INTO recipients (recipient, last_incoming) VALUES ({m}, {m})
        ON CONFLICT (recipient) DO UPDATE SET last_incoming = {d.greatest}(
            COALESCE(recipients.last_incoming, excluded.last_incoming), excluded.last_incoming)"""
