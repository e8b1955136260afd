"""From a campaign table to planned messages: columns, body text, recipients, dedupe.

:class:`Campaign` checks what can be checked before anything is sent (the recipient column,
the body text's ``{column}`` placeholders) and raises :class:`~bulk_sender.errors.UsageError`
for a file or setting that cannot work. :meth:`Campaign.plan` then streams the table and
yields one :class:`Planned` per message, in input order: either a body to send, or a record
that is already final (``invalid`` with a reason, ``duplicate``). Rows that an earlier run
finished are skipped without being parsed, which is what makes a resume of a mostly-done
campaign fast.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from bulk_sender.config import CampaignSettings
from bulk_sender.errors import ConfigError, InputFileError, UsageError
from bulk_sender.input.dedupe import FirstSeen
from bulk_sender.input.phone import PhoneVerdict, normalise, split_recipients
from bulk_sender.input.recipient import RECIPIENT_EXAMPLES, is_recipient_header
from bulk_sender.input.table import Table
from bulk_sender.model import Record, Status
from bulk_sender.record.journal import ResumeState
from bulk_sender.sending.payload import (
    BODY_TEXT_MAX,
    REF_MAX,
    Fields,
    build_body,
    clip_ref,
    content_key,
)

__all__ = ["OPTIONAL_COLUMNS", "Campaign", "LoadStats", "Planned", "canonical"]

#: Optional columns that override the config per row.
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "thumbnail_product_retailer_id", "body_text", "ref", "ref1", "ref2", "wa_source",
)  # fmt: skip
_EXAMPLES_PER_REASON = 3


def canonical(name: str) -> str:
    """A header name, case- and space-insensitive: ``" Phone Number"`` -> ``phone_number``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True, slots=True)
class Planned:
    """One message: a ``body`` to send, or ``None`` when ``record`` is already final.

    ``content`` identifies what the customer would see (:func:`~bulk_sender.sending.payload.
    content_key`), for the repeat guard; 0 when there is no body.
    """

    record: Record
    body: bytes | None
    content: int = 0


@dataclass(slots=True)
class LoadStats:
    """What the loader saw, for the summary and the dry-run report."""

    rows: int = 0
    messages: int = 0
    skipped_done: int = 0
    refs_truncated: int = 0
    warnings: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)
    example_body: bytes | None = None

    def add_invalid(self, category: str, row: int) -> None:
        """Count an invalid message under its kind of problem, keeping a few example rows."""
        self.invalid[category] += 1
        rows = self.examples.setdefault(category, [])
        if len(rows) < _EXAMPLES_PER_REASON:
            rows.append(row)


@dataclass(frozen=True, slots=True)
class _Template:
    """A body text with ``{column}`` placeholders bound to column indexes."""

    text: str
    fields: tuple[tuple[str, int], ...]

    def render(self, cells: Sequence[str]) -> tuple[str, str | None]:
        """The filled-in text, or an error naming the first empty placeholder."""
        if not self.fields:
            return self.text, None
        values = {}
        for name, index in self.fields:
            value = cells[index]
            if not value.strip():
                return "", f"the column {name!r} is empty but the body text uses {{{name}}}"
            values[name] = value
        return self.text.format_map(values), None


class Campaign:
    """A campaign table bound to its settings; see the module docstring."""

    def __init__(self, table: Table, settings: CampaignSettings) -> None:
        self.table = table
        self.settings = settings
        self.stats = LoadStats()
        self._columns = {canonical(name): i for i, name in reversed(list(enumerate(table.header)))}
        self.to_column = self._find_to_column()
        self._optional = {name: self._columns.get(name) for name in OPTIONAL_COLUMNS}
        self._ref_columns = tuple(self._optional[name] for name in ("ref", "ref1", "ref2"))
        self._retailer = settings.thumbnail_product_retailer_id
        self._source = settings.wa_source
        self._region = settings.default_region or None
        self._dedupe = not settings.allow_duplicates
        self._default_body = (
            self._template(settings.body_text, "[campaign] body_text")
            if settings.body_text
            else None
        )
        self._templates: dict[str, _Template | str] = {}
        if self._default_body is None and self._optional["body_text"] is None:
            raise ConfigError(
                "[campaign] body_text",
                f"empty, and {table.path.name} has no body_text column: every row would be "
                "invalid; set [campaign] body_text in the config, or add a body_text column",
            )

    # -- checks before sending ---------------------------------------------------------------

    def _find_to_column(self) -> int:
        header = self.table.header
        matches = [i for i, name in enumerate(header) if is_recipient_header(name)]
        if not matches:
            found = ", ".join(repr(name) for name in header) or "none"
            raise InputFileError(
                self.table.path,
                f"no recipient column: the columns found are {found}; name the recipient "
                f"column to, or {', '.join(RECIPIENT_EXAMPLES[1:])} or the like (case, spaces "
                "and dots do not matter)",
                line=1,
            )
        if len(matches) > 1:
            names = " and ".join(repr(header[i]) for i in matches)
            raise InputFileError(
                self.table.path,
                f"two columns both mean the recipient: {names}; keep only one, or rename the "
                "other (e.g. 'Alternate Mobile') to keep it as an ordinary column",
                line=1,
            )
        return matches[0]

    def _template(self, text: str, where: str) -> _Template:
        """Bind ``text``'s placeholders to columns, or raise :class:`UsageError`."""
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise UsageError(
                f"{where}: the body text has a broken placeholder ({exc}); write {{column}} to "
                "fill in a column, or {{ and }} for literal braces"
            ) from None
        bound: list[tuple[str, int]] = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            index = self._columns.get(canonical(name))
            if index is None or spec or conversion or not name.strip():
                columns = ", ".join(self.table.header)
                raise UsageError(
                    f"{where}: the placeholder {{{name}}} names no column of {self.table.path} "
                    f"(its columns are: {columns}); fix the placeholder or add the column"
                )
            bound.append((name, index))
        return _Template(text, tuple(bound))

    def identity(self) -> dict[str, str]:
        """What makes two runs the same campaign: the file's bytes and the message settings."""
        s = self.settings
        message_settings = orjson.dumps(
            [
                s.body_text, s.thumbnail_product_retailer_id, s.wa_source,
                s.default_region, s.allow_duplicates, self.table.format.encoding,
            ]
        )  # fmt: skip
        return {
            "file_sha256": self.table.sha256,
            "settings": hashlib.sha256(message_settings).hexdigest(),
        }

    # -- planning ----------------------------------------------------------------------------

    def plan(
        self, resume: ResumeState | None = None, *, chunk_size: int = 2000, bodies: bool = True
    ) -> Iterator[Planned]:
        """Every message of the campaign in input order, skipping what ``resume`` says is done.

        ``bodies=False`` (a dry run) serialises only the first valid message's body, for the
        report; the others get an empty body. Nothing else about the verdicts changes.
        """
        state = resume or ResumeState()
        seen = FirstSeen()
        seeded = self.settings.allow_duplicates
        phone_column = frozenset({self.to_column})
        for chunk in self.table.chunks(chunk_size, no_line_breaks=phone_column):
            if state.all_done(chunk.first_row, len(chunk.rows)):
                self.stats.rows += len(chunk.rows)
                self.stats.skipped_done += len(chunk.rows)
                continue
            for offset, cells in enumerate(chunk.rows):
                row = chunk.first_row + offset
                self.stats.rows += 1
                if state.row_done(row):
                    self.stats.skipped_done += 1
                    continue
                if not seeded:  # only now: the journal's seed loads while done rows are skipped
                    seen.load(*state.seen())
                    seeded = True
                yield from self._plan_row(row, cells, state, seen, bodies)

    def _plan_row(
        self,
        row: int,
        cells: Sequence[str],
        state: ResumeState,
        seen: FirstSeen,
        bodies: bool,
    ) -> Iterator[Planned]:
        """One message per recipient in the row's cell, skipping those a resume says are done."""
        stats = self.stats
        ref, ref1, ref2, clipped = self._refs(cells)
        raw_cell = cells[self.to_column]
        recipients = split_recipients(raw_cell) or [raw_cell.strip()]
        parts = len(recipients)
        body_text, problem = self._body_text(cells)
        retailer = self._cell(cells, "thumbnail_product_retailer_id") or self._retailer
        source = self._cell(cells, "wa_source") or self._source
        for part, raw in enumerate(recipients):
            key = (row, part)
            if state.parts_done and key in state.parts_done:
                continue
            stats.messages += 1
            stats.refs_truncated += clipped
            attempts = state.attempts.get(key, 0) if state.attempts else 0
            verdict = normalise(raw, self._region)
            e164 = verdict.e164
            if e164 is None or problem is not None:
                category, reason = _why_invalid(raw, verdict, problem)
                stats.add_invalid(category, row)
                yield Planned(
                    Record(
                        row=row, part=part, parts=parts, to=raw, status=Status.INVALID,
                        error=reason, ref=ref, ref1=ref1, ref2=ref2,
                    ),
                    None,
                )  # fmt: skip
                continue
            if self._dedupe and (first := seen.first(e164, row, part)) != key:
                yield Planned(
                    Record(
                        row=row, part=part, parts=parts, to=e164, status=Status.DUPLICATE,
                        error=f"same number as row {first[0]}", ref=ref, ref1=ref1, ref2=ref2,
                    ),
                    None,
                )  # fmt: skip
                continue
            warning = verdict.warning or ""
            if warning:
                stats.warnings += 1
            body = b""
            if bodies or stats.example_body is None:
                body = build_body(Fields(e164, body_text, retailer, ref, ref1, ref2, source))
                if stats.example_body is None:
                    stats.example_body = body
            record = Record(
                row=row, part=part, parts=parts, to=e164, status=Status.NOT_SENT, attempts=attempts,
                ref=ref, ref1=ref1, ref2=ref2, warning=warning,
            )  # fmt: skip
            yield Planned(record, body, content_key(body_text, retailer))

    def _cell(self, cells: Sequence[str], name: str) -> str:
        index = self._optional[name]
        return cells[index].strip() if index is not None else ""

    def _refs(self, cells: Sequence[str]) -> tuple[str, str, str, int]:
        """The row's refs, cut to the API's limit, and how many had to be cut."""
        ref, ref1, ref2 = (cells[i].strip() if i is not None else "" for i in self._ref_columns)
        if len(ref) <= REF_MAX and len(ref1) <= REF_MAX and len(ref2) <= REF_MAX:
            return ref, ref1, ref2, 0
        (ref, a), (ref1, b), (ref2, c) = clip_ref(ref), clip_ref(ref1), clip_ref(ref2)
        return ref, ref1, ref2, a + b + c

    def _body_text(self, cells: Sequence[str]) -> tuple[str, str | None]:
        """The row's filled-in body text, or a reason the row cannot be sent."""
        own = self._cell(cells, "body_text")
        template: _Template | str | None
        if own:
            template = self._templates.get(own)
            if template is None:
                try:
                    template = self._template(own, "the body_text column")
                except UsageError as exc:
                    template = str(exc)
                if len(self._templates) < 1024:
                    self._templates[own] = template
        else:
            template = self._default_body
        if template is None:
            return "", "no body text: fill the body_text column or set [campaign] body_text"
        if isinstance(template, str):
            return "", template
        text, problem = template.render(cells)
        if problem is not None:
            return "", problem
        if not text.strip():
            return "", "the body text is empty"
        if len(text) > BODY_TEXT_MAX:
            return "", (
                f"the body text is {len(text)} characters after filling in; "
                f"WhatsApp allows at most {BODY_TEXT_MAX}"
            )
        return text, None


def _why_invalid(raw: str, verdict: PhoneVerdict, body_problem: str | None) -> tuple[str, str]:
    """An invalid message's category (the report counts these) and its row's reason.

    A number that is wrong is reported before a body text that is.
    """
    if verdict.e164 is not None:
        return body_problem or "", body_problem or ""
    if not raw:
        return "no phone number", "no phone number"
    kind = re.split(r"[:;]", verdict.problem or "", maxsplit=1)[0]
    return f"phone number: {kind}", f"phone number {raw!r}: {verdict.problem}"
