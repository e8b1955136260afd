"""Planning in the sending process: the engine's one plan shape, async batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bulk_sender.config import CampaignSettings
from bulk_sender.input.campaign import Campaign, LoadStats, Planned
from bulk_sender.input.plan_inline import INLINE_BATCH, plan_inline
from bulk_sender.input.plan_process import PlanJob, PlanProcess
from bulk_sender.input.table import open_table
from bulk_sender.model import Record, Status
from bulk_sender.record.journal import Journal, ResumeState


def _campaign(path: Path, numbers: list[str]) -> Campaign:
    path.write_text("\n".join(["to", *numbers]) + "\n", encoding="utf-8")
    return Campaign(open_table(path), CampaignSettings(body_text="Hello", default_region="IN"))


async def _batches(plan: AsyncIterator[Sequence[Planned]]) -> list[list[Planned]]:
    return [list(batch) async for batch in plan]


def _journal_with(path: Path, campaign: Campaign, records: list[Record]) -> Journal:
    journal = Journal.open(path, identity=campaign.identity(), destination="t")

    async def write() -> None:
        journal.start_writer()
        for record in records:
            await journal.write(record)
        journal.stop_writer()

    asyncio.run(write())
    return journal


def test_inline_batches_are_the_plan_in_order(tmp_path: Path) -> None:
    """The inline plan is Campaign.plan's messages, in order, in batches of INLINE_BATCH."""
    numbers = [f"+9198765{i:05d}" for i in range(2 * INLINE_BATCH + 44)]
    expected = list(_campaign(tmp_path / "c.csv", numbers).plan())
    campaign = _campaign(tmp_path / "c.csv", numbers)
    journal = _journal_with(tmp_path / "j", campaign, [])
    batches = asyncio.run(_batches(plan_inline(campaign, journal.resume_state(), journal.path)))
    journal.close()
    assert [len(b) for b in batches] == [INLINE_BATCH, INLINE_BATCH, 44]
    assert [item for batch in batches for item in batch] == expected


def test_inline_plan_gives_the_loop_a_turn_between_batches(tmp_path: Path) -> None:
    """Between two batches other tasks run: planning never holds the loop for a whole file."""
    campaign = _campaign(tmp_path / "c.csv", [f"+9198765{i:05d}" for i in range(300)])
    journal = _journal_with(tmp_path / "j", campaign, [])
    turns: list[None] = []
    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async for _ in plan_inline(campaign, journal.resume_state(), journal.path):
            seen.append(len(turns))  # the turns the loop took before this batch came
            loop.call_soon(turns.append, None)

    asyncio.run(main())
    journal.close()
    assert seen == [0, 1, 2]


def test_both_planners_resume_from_the_state_and_load_the_seed(tmp_path: Path) -> None:
    """Whoever plans loads the dedupe seed: inline and in the child, a resume skips the done
    row and knows its number, so the same number later in the file is a duplicate."""
    a, b = "+919876500000", "+919876500001"
    campaign = _campaign(tmp_path / "c.csv", [a, b, a])
    journal = _journal_with(
        tmp_path / "j", campaign, [Record(row=1, to=a, status=Status.SENT, attempts=1)]
    )

    async def inline() -> list[Planned]:
        state = journal.resume_state()
        batches = await _batches(plan_inline(campaign, state, journal.path))
        return [item for batch in batches for item in batch]

    async def child() -> list[Planned]:
        child_campaign = _campaign(tmp_path / "c.csv", [a, b, a])
        with PlanProcess() as planner:
            planner.give(PlanJob.of(child_campaign, journal.resume_state(), journal.path))
            return [item for batch in await _batches(planner.plan(LoadStats())) for item in batch]

    planned = asyncio.run(inline())
    assert asyncio.run(child()) == planned
    journal.close()
    assert [(p.record.row, p.record.status, p.record.error) for p in planned] == [
        (2, Status.NOT_SENT, ""),
        (3, Status.DUPLICATE, "same number as row 1"),
    ]


def test_a_plan_job_carries_the_resume_state_itself(tmp_path: Path) -> None:
    """The job hands the child the ResumeState as it is, not a copy of some of its fields."""
    campaign = _campaign(tmp_path / "c.csv", ["+919876500000"])
    state = ResumeState(rows_done=bytearray(b"\x00\x01"), attempts={(3, 0): 2})
    job = PlanJob.of(campaign, state, tmp_path / "j")
    assert job.resume is state
