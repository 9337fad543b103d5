"""Runners forked from the agent's template (``runner_start: fork``, the default on
Linux): they serve, each with its own GPUs, a crash is one replica's, the agent's death
ends them all, a module that stops importing is a load error, and ``exec`` still
starts fresh interpreters."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from freight.agent.forks import Forkserver
from freight.agent.replica import Replica, RunnerCommand
from tests.fixtures.server import FAST, Server, wait_until
from tests.integration.helpers import create, wait_done

TEMPLATE = "freight.runner.template"

MODELS = """
    import json
    import os
    import time
    from pathlib import Path

    import freight

    VERSION = {version}


    class Who(freight.Model):
        \"\"\"Each replica writes what it saw at load(): pid, parent, its GPUs.\"\"\"

        name = "who"
        replicas = freight.Replicas(min=2, max=2)
        resources = freight.Resources(gpus=1)

        def load(self) -> None:
            self.seen = {{
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
            }}
            Path(os.environ["WHO_DIR"], str(os.getpid())).write_text(json.dumps(self.seen))

        def predict(self, input: dict) -> dict:
            return self.seen


    class Hold(freight.Model):
        \"\"\"Writes its pid to input["pidfile"].<attempt>, then sleeps on the first attempt.\"\"\"

        name = "hold"
        max_attempts = 2

        def predict(self, input: dict) -> dict:
            attempt = 1
            while Path(f"{{input['pidfile']}}.{{attempt}}").exists():
                attempt += 1
            Path(f"{{input['pidfile']}}.{{attempt}}").write_text(str(os.getpid()))
            time.sleep(600 if attempt == 1 else 0)
            return {{"attempt": attempt, "pid": os.getpid(), "ppid": os.getppid()}}


    class Late(freight.Model):
        \"\"\"No replica until asked; says which version of this file it runs.\"\"\"

        name = "late"
        replicas = freight.Replicas(min=0, max=1)

        def predict(self, input: dict) -> dict:
            return {{"version": VERSION, "pid": os.getpid(), "ppid": os.getppid()}}
"""


def write_models(project: Path, version: int, broken: bool = False) -> None:
    text = textwrap.dedent(MODELS.format(version=version))
    if broken:
        text = 'raise RuntimeError("broken on purpose")\n' + text
    (project / "models.py").write_text(text)


def start(tmp_path: Path, models: list[str], **extra: str) -> Server:
    """A server (embedded shape) of the test project serving ``models``, on two GPUs
    that the runners only see in CUDA_VISIBLE_DEVICES."""
    project = tmp_path / "project"
    if not project.exists():
        project.mkdir()
        write_models(project, version=1)
    (tmp_path / "who").mkdir(exist_ok=True)
    env = {
        **os.environ,
        **FAST,
        "FREIGHT_STATE_DIR": str(tmp_path / "state"),
        "FREIGHT_GPUS": "0,1",
        "FREIGHT_MODELS": json.dumps([f"models:{m}" for m in models]),
        "WHO_DIR": str(tmp_path / "who"),
    }
    for name in ("FREIGHT_DATABASE_URL", "FREIGHT_STORAGE_URL", "FREIGHT_RUNNER_START"):
        env.pop(name, None)
    env.update(extra)
    return Server(env=env, cwd=tmp_path, project=project).start(probe="/healthz")


Start = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Start]:
    """``start`` in the test's directory; every server it started killed at teardown."""
    servers: list[Server] = []

    def make(models: list[str], **extra: str) -> Server:
        servers.append(start(tmp_path, models, **extra))
        return servers[-1]

    yield make
    for server in servers:
        server.stop(kill=True)


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def is_template(pid: int) -> bool:
    return TEMPLATE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def loaded(tmp_path: Path, count: int) -> list[dict[str, object]]:
    """What the Who replicas saw at load(), once ``count`` of them have loaded."""
    seen = wait_until(lambda: len(files := list((tmp_path / "who").iterdir())) >= count and files)
    return [json.loads(f.read_text()) for f in seen]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One server for the tests that leave it running: Who (two replicas, one GPU each)
    and Hold."""
    tmp_path = tmp_path_factory.mktemp("forked")
    server = start(tmp_path, ["Who", "Hold"])
    yield server, tmp_path
    server.stop(kill=True)


def test_forked_replicas_load_with_their_own_gpus(served: tuple[Server, Path]) -> None:
    """Both replicas are children of the template (itself the agent's child), each
    loaded with its own CUDA_VISIBLE_DEVICES, and they serve."""
    server, tmp_path = served
    assert server.proc is not None
    seen = loaded(tmp_path, 2)
    templates = {int(str(s["ppid"])) for s in seen}
    assert len(templates) == 1
    (template,) = templates
    assert is_template(template) and parent_of(template) == server.proc.pid
    assert sorted(str(s["gpus"]) for s in seen) == ["0", "1"]
    with server.client() as client:
        done = wait_done(client, create(client, "who", {})["id"])
    assert done["status"] == "succeeded"
    assert done["output"]["pid"] in {s["pid"] for s in seen}


def test_a_forked_runner_killed_mid_prediction_is_retried(
    served: tuple[Server, Path], tmp_path: Path
) -> None:
    """SIGKILL of a forked runner mid-prediction is that replica's crash: the prediction
    reruns on a new replica, forked from the same template."""
    server, _ = served
    pidfile = tmp_path / "hold"
    with server.client() as client:
        created = create(client, "hold", {"pidfile": str(pidfile)})
        first = Path(f"{pidfile}.1")
        pid = int(wait_until(lambda: first.exists() and first.read_text().strip()))
        template = parent_of(pid)
        assert is_template(template)
        os.kill(pid, signal.SIGKILL)
        done = wait_done(client, created["id"])
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert done["output"]["pid"] != pid and done["output"]["ppid"] == template
    assert running(template)


def test_a_dead_template_is_replaced_and_the_agents_death_ends_all(
    serve: Start, tmp_path: Path
) -> None:
    """SIGKILL of the template ends its runners: they are crashed replicas, replaced
    from a new template. SIGKILL of the server process alone (not its group): the
    template dies with it, and every runner forked from it too."""
    server = serve(["Who"])
    assert server.proc is not None
    first = loaded(tmp_path, 2)
    (old,) = {int(str(s["ppid"])) for s in first}
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not any(running(int(str(s["pid"]))) for s in first))
    seen = [s for s in loaded(tmp_path, 4) if s not in first]
    pids = [int(str(s["pid"])) for s in seen]
    (template,) = {int(str(s["ppid"])) for s in seen}
    assert template != old and is_template(template)
    assert all(running(pid) for pid in [template, *pids])
    assert f"runner template (pid {old}) lost" in server.logs()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.wait_exit()
    wait_until(lambda: not any(running(pid) for pid in [template, *pids]))


def test_a_module_that_stops_importing_is_a_load_error_until_fixed(
    serve: Start, tmp_path: Path
) -> None:
    """models.py broken after the template imported it: the next replica's start is a
    load error naming the import's failure (fresh interpreters, as without a template);
    fixed, the next start forks from a new template that runs the new file."""
    server = serve(["Late"], FREIGHT_MAX_LOAD_ATTEMPTS="0")
    project = tmp_path / "project"
    with server.client() as client:
        first = wait_done(client, create(client, "late", {})["id"])["output"]
        assert first["version"] == 1 and is_template(first["ppid"])
        write_models(project, version=2, broken=True)
        os.kill(first["pid"], signal.SIGKILL)  # its replacement imports the file again

        def load_error() -> dict[str, str] | None:
            models = {m["name"]: m for m in client.get("/v1/models").json()["data"]}
            error: dict[str, str] | None = models["late"]["load_error"]
            return error

        error = wait_until(load_error)
        assert "RuntimeError: broken on purpose" in error["message"]
        assert "runner template not used: cannot import 'models:Late'" in server.logs()
        write_models(project, version=3)
        fixed = wait_done(client, create(client, "late", {})["id"])["output"]
    assert fixed["version"] == 3
    assert is_template(fixed["ppid"]) and fixed["ppid"] != first["ppid"]


def test_exec_starts_fresh_interpreters(serve: Start) -> None:
    """runner_start: exec — the runner is the agent's own child, no template runs."""
    server = serve(["Late"], FREIGHT_RUNNER_START="exec")
    assert server.proc is not None
    with server.client() as client:
        done = wait_done(client, create(client, "late", {})["id"])
    assert done["output"]["ppid"] == server.proc.pid
    assert "runner template" not in server.logs()


THREADED = """
    import threading

    import freight

    threading.Thread(target=threading.Event().wait, name="poller", daemon=True).start()


    class Spins(freight.Model):
        name = "spins"

        def predict(self, input: dict) -> dict:
            return input
"""


def command(project: Path, ref: str) -> RunnerCommand:
    return RunnerCommand(ref, project, "memory://", 1024, env={"CUDA_VISIBLE_DEVICES": "7"})


async def test_a_template_whose_imports_start_threads_is_not_forked_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A module that starts a thread at import would miss it in a fork: the replica
    starts as a fresh interpreter, the agent's own child."""
    (tmp_path / "threaded.py").write_text(textwrap.dedent(THREADED))
    forks = Forkserver(tmp_path, ["threaded:Spins"])
    replica = Replica("spins-0", command(tmp_path, "threaded:Spins"), spawn=forks.spawn)
    try:
        await replica.start()
        assert replica.pid is not None and parent_of(replica.pid) == os.getpid()
        assert forks.template_pid is None
        assert "the model modules started threads (poller)" in caplog.text
    finally:
        await replica.kill()
        await forks.aclose()


async def test_closing_the_forkserver_ends_its_template(tmp_path: Path) -> None:
    """A forked replica stops as a fresh one does; the agent's drain closing the
    forkserver ends the template."""
    project = tmp_path / "project"
    project.mkdir()
    write_models(project, version=1)
    forks = Forkserver(project, ["models:Late"])
    replica = Replica("late-0", command(project, "models:Late"), spawn=forks.spawn)
    await replica.start()
    template = forks.template_pid
    assert template is not None and replica.pid is not None
    assert parent_of(replica.pid) == template and parent_of(template) == os.getpid()
    await replica.stop()
    assert not replica.alive and not running(replica.pid)
    await forks.aclose()
    assert not running(template)
