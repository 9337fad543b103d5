"""Models for the integration tests: each one exercises a path of the platform."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import freight


class Echo(freight.Model):
    """Returns its JSON input unchanged, batched."""

    name = "echo"
    batching = freight.Batching(max_size=16, max_wait_ms=0)
    replicas = freight.Replicas(min=2, max=2)

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        return inputs


class Boom(freight.Model):
    """Raises for every input whose "fail" is true; echoes the others."""

    name = "boom"

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        if input.get("fail"):
            raise ValueError(f"asked to fail: {input.get('why', '')}")
        return {"ok": True}


class Hold(freight.Model):
    """Writes its pid to input["pidfile"], then sleeps input["ms"] (default long):
    lets a test find the runner and kill it mid-prediction."""

    name = "hold"
    max_attempts = 2

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        pidfile = Path(input["pidfile"])
        attempt = 1
        while Path(f"{pidfile}.{attempt}").exists():
            attempt += 1
        Path(f"{pidfile}.{attempt}").write_text(str(os.getpid()))
        time.sleep(
            input.get("ms", 600_000) / 1000 if attempt <= input.get("hold_attempts", 99) else 0
        )
        return {"attempt": attempt, "pid": os.getpid()}


class Slow(freight.Model):
    """Sleeps input["ms"]; its timeout is one second."""

    name = "slow"
    timeout_s = 1.0

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(input["ms"] / 1000)
        return {"slept_ms": input["ms"]}


class Nap(freight.Model):
    """Sleeps input["ms"] per batch; two replicas, batches of up to 8."""

    name = "nap"
    batching = freight.Batching(max_size=8, max_wait_ms=5)
    replicas = freight.Replicas(min=2, max=2)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        time.sleep(max(i.get("ms", 0) for i in inputs) / 1000)
        return [{"n": i.get("n"), "batch": len(inputs)} for i in inputs]


class Passthrough(freight.Model):
    """Streams its input file to an output file (any size, constant memory)."""

    name = "passthrough"

    def predict(self, input: freight.Payload) -> freight.File:
        fd, name = tempfile.mkstemp(prefix="passthrough-")
        with os.fdopen(fd, "wb") as out, input.open() as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return freight.File(name, content_type=input.content_type)


class Reverse(freight.Model):
    """Takes bytes, returns them reversed as bytes."""

    name = "reverse"

    def predict(self, input: bytes) -> bytes:
        return input[::-1]


def _agent_pid() -> int:
    """The agent that runs this runner: its parent, or the parent of the runner template
    it was forked from (``runner_start: fork``)."""
    parent = os.getppid()
    cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    if b"freight.runner.template" not in cmdline:
        return parent
    stat = Path(f"/proc/{parent}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


class _Gate(freight.Model):
    """Appends "<runner pid> <agent pid>" to input["dir"]/<input["tag"]>.runs on every run,
    waits until input["dir"]/open exists, then touches <tag>.done: a test holds
    predictions in flight as long as it likes and counts how often each one ran.

    The leading underscore keeps it out of discovery: only servers that name it
    (``models=["_Gate"]``) start its two replicas."""

    name = "gate"
    batching = freight.Batching(max_size=4, max_wait_ms=0)
    replicas = freight.Replicas(min=2, max=2)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in inputs:
            with (Path(item["dir"]) / f"{item['tag']}.runs").open("a") as runs:
                runs.write(f"{os.getpid()} {_agent_pid()}\n")
        gates = {Path(item["dir"]) / "open" for item in inputs}
        deadline = time.monotonic() + 300
        while not all(gate.exists() for gate in gates):
            if time.monotonic() > deadline:
                raise TimeoutError("the gate was never opened")
            time.sleep(0.02)
        for item in inputs:
            (Path(item["dir"]) / f"{item['tag']}.done").touch()
        return [{"tag": item["tag"], "pid": os.getpid()} for item in inputs]


class _Latch(freight.Model):
    """Batch-job records: appends input["n"] to input["dir"]/runs for every record it
    runs; a record with "hold" writes the runner's pid to input["dir"]/pid, then waits
    until input["dir"]/open exists. A test kills the server (or the runner) while held
    records run, then counts how often each record ran."""

    name = "latch"
    replicas = freight.Replicas(min=1, max=1)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in inputs:
            with (Path(item["dir"]) / "runs").open("a") as runs:
                runs.write(f"{item['n']}\n")
        deadline = time.monotonic() + 300
        for item in inputs:
            if item.get("hold"):
                (Path(item["dir"]) / "pid").write_text(str(os.getpid()))
            while item.get("hold") and not (Path(item["dir"]) / "open").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the latch was never opened")
                time.sleep(0.02)
        return [{"n": item["n"]} for item in inputs]


class _Nap0(freight.Model):
    """Sleeps input["ms"]; scales from zero to three replicas (two predictions each)
    and back to zero after a second idle. Out of discovery (leading underscore): only
    servers that name it (``models=["_Nap0"]``) serve it."""

    name = "nap0"
    replicas = freight.Replicas(min=0, max=3, target_backlog=2, idle_s=1)

    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        time.sleep(input.get("ms", 0) / 1000)
        return {"slept_ms": input.get("ms", 0), "pid": os.getpid()}


class _Gated(freight.Model):
    """Scaled to zero; its load() waits until the file named by $FREIGHT_TEST_LOAD_GATE
    exists: a cold start that lasts until the test opens the gate."""

    name = "gated"
    replicas = freight.Replicas(min=0, max=1, idle_s=60)

    def load(self) -> None:
        gate = Path(os.environ["FREIGHT_TEST_LOAD_GATE"])
        while not gate.exists():
            time.sleep(0.02)

    def predict(self, input: Any) -> Any:
        return input
