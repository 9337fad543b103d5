"""The delivery process's supervision, with a stand-in child (a few lines of Python
reading its stdin as ``python -m freight.deliverer`` does): wake-ups reach it, end of
file stops it, a child that exits on its own is started again. No sockets; every
wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from freight.agent.delivery_process import DeliveryProcess, read_wakes

DEADLINE_S = 30.0

#: counts wake-up bytes into a file, line by line, until end of file; with a second
#: argument, the first child crashes at once (exit 3), leaving that file behind
CHILD = """
import os, pathlib, sys
out = open(sys.argv[1], "a", buffering=1)
if len(sys.argv) > 2 and not pathlib.Path(sys.argv[2]).exists():
    pathlib.Path(sys.argv[2]).touch()
    sys.exit(3)
while True:
    data = os.read(0, 4096)
    if not data:
        out.write("end\\n")
        sys.exit(0)
    out.write(f"{len(data)}\\n")
"""


def stand_in(tmp_path: Path, *crash_once: str) -> tuple[DeliveryProcess, Path]:
    log = tmp_path / "wakes.log"
    log.touch()
    return DeliveryProcess([sys.executable, "-c", CHILD, str(log), *crash_once]), log


async def until(check: object, what: str) -> None:
    """Wait for ``check()`` on the loop (each try a yield to other tasks), within the deadline."""
    assert callable(check)
    async with asyncio.timeout(DEADLINE_S):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


async def test_wake_ups_reach_the_child_and_stop_ends_it(tmp_path: Path) -> None:
    """Each wake is a byte on the child's stdin; stop() closes it, the child ends."""
    process, log = stand_in(tmp_path)
    process.start()
    await until(lambda: process.pid is not None, "the child runs")
    for _ in range(3):
        process.wake()
    await until(lambda: sum(int(n) for n in log.read_text().split() if n.isdigit()) == 3, "3")
    await process.stop(grace_s=DEADLINE_S)
    assert log.read_text().split()[-1] == "end"
    assert process.pid is None and process.starts == 1
    process.wake()  # after the stop: nothing to wake, no error


async def test_a_child_that_exits_on_its_own_is_started_again(tmp_path: Path) -> None:
    """A crashed child (exit 3) is replaced by a new one, which the wakes then reach."""
    process, log = stand_in(tmp_path, str(tmp_path / "crashed"))
    process.start()
    await until(lambda: process.starts == 2 and process.pid is not None, "started again")
    process.wake()
    await until(lambda: log.read_text().split()[-1:] == ["1"], "the new child is woken")
    await process.stop(grace_s=DEADLINE_S)
    assert process.pid is None


async def test_the_child_side_reads_wakes_until_end_of_file() -> None:
    """read_wakes calls wake() per read of wake-up bytes and ended() at end of file."""
    read, write = os.pipe()
    woken, ended = asyncio.Event(), asyncio.Event()
    try:
        read_wakes(read, woken.set, ended.set)
        os.write(write, b"\x01\x01")
        await asyncio.wait_for(woken.wait(), DEADLINE_S)
        assert not ended.is_set()
        os.close(write)
        write = -1
        await asyncio.wait_for(ended.wait(), DEADLINE_S)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


async def test_with_due_the_child_waits_for_the_first_wake(tmp_path: Path) -> None:
    """Nothing due: no child at start; the first wake starts it (and its wakes reach it
    from then on); a stop before any start ends cleanly."""
    log = tmp_path / "wakes.log"
    log.touch()
    asked = 0

    async def due() -> bool:
        nonlocal asked
        asked += 1
        return False

    command = [sys.executable, "-c", CHILD, str(log)]
    process = DeliveryProcess(command, due=due, recheck_s=0.01)
    process.start()
    await until(lambda: asked >= 3, "asked again while nothing is due")
    assert process.starts == 0 and process.pid is None
    process.wake()
    await until(lambda: process.pid is not None, "the first wake starts the child")
    process.wake()
    await until(lambda: log.read_text().split()[-1:] == ["1"], "the next wake reaches it")
    await process.stop(grace_s=DEADLINE_S)
    assert process.starts == 1

    idle = DeliveryProcess(command, due=due, recheck_s=DEADLINE_S)
    idle.start()
    await idle.stop(grace_s=DEADLINE_S)
    assert idle.starts == 0 and idle.pid is None


async def test_with_due_rows_left_from_before_start_the_child(tmp_path: Path) -> None:
    """Rows already due (an earlier life's, a dead node's leases) start the child without
    a wake; a store that cannot tell starts it too."""
    log = tmp_path / "wakes.log"
    log.touch()
    answers = iter([False, True])

    async def due() -> bool:
        return next(answers)

    command = [sys.executable, "-c", CHILD, str(log)]
    process = DeliveryProcess(command, due=due, recheck_s=0.01)
    process.start()
    await until(lambda: process.pid is not None, "started once due() said so")
    await process.stop(grace_s=DEADLINE_S)

    async def broken() -> bool:
        raise OSError("the store is down")

    unsure = DeliveryProcess(command, due=broken, recheck_s=DEADLINE_S)
    unsure.start()
    await until(lambda: unsure.pid is not None, "started when due() cannot tell")
    await unsure.stop(grace_s=DEADLINE_S)
