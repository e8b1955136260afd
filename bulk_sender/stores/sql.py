"""The callback store's SQL, written once for every backend.

Plain SQL that SQLite (3.24+) and PostgreSQL both run: ``ON CONFLICT ... DO NOTHING`` for
idempotent inserts, ``CASE``, ``MIN``/``MAX``, ``substr``. A backend fills in the few words that
differ (:class:`Dialect`: the 64-bit key's type, SQLite's ``WITHOUT ROWID``, the placeholder)
and, for the merge, the schema names of the campaign journal (``j``), the store (``cb``) and the
local output (``out``). Text comparisons must be bytewise (SQLite's default; on PostgreSQL use
``COLLATE "C"``), so that ``MIN`` picks the same failure as :mod:`bulk_sender.delivery.precedence`.

Tables:

``status_events``   one row per distinct status event, in arrival order (``seq``: a commit
                    touches few pages); ``event_key`` is its content's 63-bit hash
                    (:attr:`StatusEvent.key`), unique, so a repeated callback inserts nothing.
``status_ids``      the message ids of each event (one to three), for the match by id, each
                    with the event's rank, time and failure, so that match reads no event.
``incoming_messages``  customers' messages, keyed by Meta's message id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from bulk_sender.delivery.events import (
    RANK,
    Callback,
    DeliveryStatus,
    IncomingMessage,
    StatusEvent,
)
from bulk_sender.delivery.precedence import failure_key
from bulk_sender.model import Status

__all__ = [
    "FEED_COLUMNS",
    "FEED_IDS",
    "STATE_COLUMNS",
    "Dialect",
    "Insert",
    "candidate_keys",
    "checked",
    "fallback_candidates",
    "feed_row",
    "id_rows",
    "incoming_row",
    "insert_statements",
    "last_incoming",
    "match_by_id",
    "match_by_recipient",
    "rows_of",
    "schema",
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The words a backend spells its own way."""

    key_type: str  #: a 64-bit integer
    serial_key: str  #: an integer primary key the database numbers in insert order
    without_rowid: str  #: appended to tables clustered on their primary key
    mark: str  #: the parameter placeholder (``?``; PostgreSQL's are numbered from it)
    #: text that is ordered (``MIN``, ``MAX``, ``>=``): bytewise, as precedence.py orders it
    ordered_text: str = "TEXT"


def schema(d: Dialect) -> list[str]:
    """The statements that create the store's tables (idempotent)."""
    return [
        "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS status_events (
            seq {d.serial_key},
            event_key {d.key_type} NOT NULL UNIQUE,
            received_at {d.ordered_text} NOT NULL,
            status TEXT NOT NULL,
            status_rank INTEGER NOT NULL,
            event_at {d.ordered_text} NOT NULL,
            recipient TEXT NOT NULL,
            ref TEXT NOT NULL,
            ref1 TEXT NOT NULL,
            ref2 TEXT NOT NULL,
            code TEXT NOT NULL,
            title TEXT NOT NULL,
            detail TEXT NOT NULL,
            failure_key {d.ordered_text}
        )""",
        "CREATE INDEX IF NOT EXISTS status_events_by_recipient"
        " ON status_events (recipient, ref, ref1, ref2)",
        f"""CREATE TABLE IF NOT EXISTS status_ids (
            message_id TEXT NOT NULL,
            event_key {d.key_type} NOT NULL,
            status_rank INTEGER NOT NULL,
            event_at {d.ordered_text} NOT NULL,
            failure_key {d.ordered_text},
            PRIMARY KEY (message_id, event_key)
        ){d.without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS incoming_messages (
            message_id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            sent_at {d.ordered_text} NOT NULL,
            received_at TEXT NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS incoming_by_sender ON incoming_messages (sender, sent_at)",
    ]


_EVENT_COLUMNS: Final = (
    "event_key", "received_at", "status", "status_rank", "event_at", "recipient", "ref",
    "ref1", "ref2", "code", "title", "detail", "failure_key",
)  # fmt: skip
_ID_COLUMNS: Final = ("message_id", "event_key", "status_rank", "event_at", "failure_key")
_INCOMING_COLUMNS: Final = ("message_id", "sender", "sent_at", "received_at", "type", "body")


@dataclass(frozen=True, slots=True)
class Insert:
    """An idempotent insert into ``table``, for any number of rows in one statement.

    One statement of many rows rather than ``executemany`` of one: the sqlite3 module lets go
    of the GIL around every statement it steps, and getting it back while the receiver's loop
    is busy is what a per-row insert mostly waits for (as in the journal).
    """

    table: str
    columns: tuple[str, ...]
    conflict: str  #: what follows ON CONFLICT
    mark: str = "?"
    single: bool = False  #: one row per statement (an upsert may not touch a row twice in one)

    @property
    def most_rows(self) -> int:
        """Rows per statement: the most that stay under SQLite's oldest limit of 999 variables."""
        return 1 if self.single else 999 // len(self.columns)

    def statement(self, rows: int) -> str:
        """The statement inserting ``rows`` rows (no ON CONFLICT clause if ``conflict`` is
        empty: a view's trigger says what a conflict does)."""
        one = "(" + ", ".join([self.mark] * len(self.columns)) + ")"
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
            + ", ".join([one] * rows)
            + (f" ON CONFLICT {self.conflict}" if self.conflict else "")
        )


def insert_statements(d: Dialect) -> tuple[Insert, Insert, Insert]:
    """The inserts of events, of their ids and of incoming messages (idempotent)."""
    return (
        Insert("status_events", _EVENT_COLUMNS, "(event_key) DO NOTHING", d.mark),
        Insert("status_ids", _ID_COLUMNS, "(message_id, event_key) DO NOTHING", d.mark),
        Insert("incoming_messages", _INCOMING_COLUMNS, "(message_id) DO NOTHING", d.mark),
    )


def checked(d: Dialect) -> Insert:
    """An upsert of ``store_meta``'s ``checked_at`` (one row per statement)."""
    return Insert(
        "store_meta", ("key", "value"), "(key) DO UPDATE SET value = excluded.value", d.mark,
        single=True,
    )  # fmt: skip


def _event_row(event: StatusEvent, received_at: str) -> tuple[object, ...]:
    failed = event.status in (DeliveryStatus.FAILED, DeliveryStatus.NOT_SENT)
    return (
        event.key, received_at, str(event.status), RANK[event.status], event.at,
        event.recipient, event.ref, event.ref1, event.ref2, event.code, event.title,
        event.detail, failure_key(event) if failed else None,
    )  # fmt: skip


def incoming_row(message: IncomingMessage, received_at: str) -> tuple[object, ...]:
    """An incoming message's row."""
    return (message.message_id, message.sender, message.at, received_at, message.type, message.body)


#: The message ids a status event has at most (:mod:`bulk_sender.delivery.parse` gives its own
#: id and the request's two); :func:`feed_row` has a column for each.
FEED_IDS: Final = 3
#: The columns of :func:`feed_row`: an event's, then its ids'.
FEED_COLUMNS: Final = (*_EVENT_COLUMNS, *(f"message_id{i}" for i in range(1, FEED_IDS + 1)))


def feed_row(event: StatusEvent, received_at: str) -> tuple[object, ...] | None:
    """The event's row followed by its ids (NULL for those it lacks), as one row, for a backend
    whose view inserts both at once; None for an event with more than :data:`FEED_IDS` ids."""
    ids = event.message_ids
    if len(ids) > FEED_IDS:
        return None
    return (*_event_row(event, received_at), *ids, *(None,) * (FEED_IDS - len(ids)))


def id_rows(event_row: tuple[object, ...], ids: tuple[str, ...]) -> list[tuple[object, ...]]:
    """The ``status_ids`` rows of an event, from its row."""
    return [(i, event_row[0], event_row[3], event_row[4], event_row[12]) for i in ids]


def rows_of(callback: Callback, received_at: str) -> Iterator[tuple[int, tuple[object, ...]]]:
    """``(statement index, parameters)`` for every row ``callback`` adds."""
    for event in callback.statuses:
        row = _event_row(event, received_at)
        yield 0, row
        for id_row in id_rows(row, event.message_ids):
            yield 1, id_row
    for message in callback.incoming:
        yield 2, incoming_row(message, received_at)


#: The columns of the merge's output table ``out.delivery`` (besides ``row`` and ``part``).
STATE_COLUMNS: Final = (
    "status_rank", "delivered_at", "read_at", "updated_at", "failed", "not_sent",
)  # fmt: skip


def _aggregates(alias: str) -> str:
    """A message's state from its events' rows (``alias``: status_ids or status_events)."""
    a = alias
    return f"""
    MAX({a}.status_rank),
    MIN(CASE WHEN {a}.status_rank = {RANK[DeliveryStatus.DELIVERED]} THEN {a}.event_at END),
    MIN(CASE WHEN {a}.status_rank = {RANK[DeliveryStatus.READ]} THEN {a}.event_at END),
    MAX({a}.event_at),
    MIN(CASE WHEN {a}.status_rank = {RANK[DeliveryStatus.FAILED]} THEN {a}.failure_key END),
    MIN(CASE WHEN {a}.status_rank = {RANK[DeliveryStatus.NOT_SENT]} THEN {a}.failure_key END)"""


_INTO: Final = f"INSERT INTO out.delivery (row, part, {', '.join(STATE_COLUMNS)})"


def match_by_id(d: Dialect) -> str:
    """Every message of the journal with an event carrying its id, with its state (one pass).

    The journal is scanned in (row, part) order and each message's events are found through
    ``status_ids``, clustered by message id and carrying each event's rank, time and failure,
    so the grouping needs no sort and no event row is read.
    """
    return f"""{_INTO}
        SELECT m.row, m.part, {_aggregates("x")}
        FROM j.messages m
        JOIN cb.status_ids x ON x.message_id = m.message_id
        WHERE m.message_id <> '' AND m.row BETWEEN {d.mark} AND {d.mark}
        GROUP BY m.row, m.part"""


def fallback_candidates(d: Dialect) -> str:
    """Accepted messages no event matched by id, paired with events for the same recipient and
    refs received since the campaign began; kept in ``out.candidates``. Parameters: that time,
    and the first and last row."""
    return f"""INSERT INTO out.candidates (row, part, "to", ref, ref1, ref2, event_key)
        SELECT m.row, m.part, m."to", m.ref, m.ref1, m.ref2, e.event_key
        FROM j.messages m
        JOIN cb.status_events e
          ON e.recipient = substr(m."to", 2) AND e.ref = m.ref AND e.ref1 = m.ref1
             AND e.ref2 = m.ref2
        WHERE m.status = '{Status.SENT}' AND e.received_at >= {d.mark}
          AND m.row BETWEEN {d.mark} AND {d.mark}
          AND NOT EXISTS (
              SELECT 1 FROM out.delivery o WHERE o.row = m.row AND o.part = m.part)"""


def candidate_keys() -> str:
    """How many accepted messages of the campaign each candidate's recipient and refs name
    (one scan of the journal), into ``out.candidate_keys``."""
    return f"""INSERT INTO out.candidate_keys ("to", ref, ref1, ref2, messages)
        SELECT m."to", m.ref, m.ref1, m.ref2, COUNT(*)
        FROM j.messages m
        WHERE m.status = '{Status.SENT}' AND m."to" IN (SELECT c."to" FROM out.candidates c)
        GROUP BY m."to", m.ref, m.ref1, m.ref2"""


def match_by_recipient() -> str:
    """The candidates' states, keeping only recipients and refs that name exactly one accepted
    message of the campaign (so an event can never be given to two messages)."""
    return f"""{_INTO}
        SELECT c.row, c.part, {_aggregates("e")}
        FROM out.candidates c
        JOIN out.candidate_keys k
          ON k."to" = c."to" AND k.ref = c.ref AND k.ref1 = c.ref1 AND k.ref2 = c.ref2
        JOIN cb.status_events e ON e.event_key = c.event_key
        WHERE k.messages = 1
        GROUP BY c.row, c.part"""


def last_incoming() -> str:
    """For failed messages: when their customer last wrote (for 131047's 24-hour window)."""
    return f"""UPDATE out.delivery SET last_incoming = (
            SELECT MAX(i.sent_at) FROM cb.incoming_messages i
            JOIN j.messages m ON i.sender = substr(m."to", 2)
            WHERE m.row = delivery.row AND m.part = delivery.part)
        WHERE status_rank IN ({RANK[DeliveryStatus.NOT_SENT]}, {RANK[DeliveryStatus.FAILED]})"""
