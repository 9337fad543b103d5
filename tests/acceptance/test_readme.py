"""README.md's five-minute tour, run literally against a real ``freight serve examples/``.

The commands are parsed from the tour: the ``$ `` lines of its ``console`` blocks
(continued by a trailing backslash) and its Python block. Each console block
runs in one bash, from the repo root with the virtualenv's ``bin`` first on
``PATH`` (``source .venv/bin/activate``), so shell variables set by one line
(``ID``, ``UPLOAD_URL``) reach the next, as they would when pasted.

The tour talks to port 8000; the server here runs on a free port. The CLI lines
are run unchanged with ``$FREIGHT_URL`` set; in the curl and Python lines, and
in the output shown, ``localhost:8000`` / ``127.0.0.1:8000`` become the real
address. The output shown under a command is a template of what it prints:
``...`` stands for anything, and prediction ids, ``(N ms)`` timings and
decimal numbers (scores, timings) may differ; everything else must be there,
in order. A command shown without output must print nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.acceptance.conftest import EXAMPLES
from tests.fixtures.server import Server, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR_HEADING = "## A five-minute tour"
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's own bin/
RUN_TIMEOUT_S = 90

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
DECIMAL = r"(?<![\w.])-?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?![\w.])"
TOKEN = re.compile(rf"(?P<gap>\.\.\.|…)|(?P<id>{UUID})|(?P<ms>\(\d+ ms\))|(?P<num>{DECIMAL})")
TOKEN_PATTERNS = {
    "gap": ".*?",
    "id": UUID,
    "ms": r"\(\d+ ms\)",
    "num": r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?",
}


@dataclass
class Step:
    """One ``$ `` command of the tour and the output lines shown under it."""

    command: str
    shown: list[str] = field(default_factory=list)


@dataclass
class Tour:
    start_lines: list[str]
    console_blocks: list[list[Step]]
    python: str


def parse_tour(text: str) -> Tour:
    """The tour section's blocks: the start-up output, the console blocks, the Python one."""
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    section = text[start : end if end >= 0 else len(text)]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```\s*$", section, re.MULTILINE | re.DOTALL)
    plain = [body for lang, body in blocks if lang == ""]
    pythons = [body for lang, body in blocks if lang == "python"]
    consoles = [parse_console(body) for lang, body in blocks if lang == "console"]
    assert plain and pythons and consoles, "the tour lost its blocks"
    return Tour(start_lines=plain[0].splitlines(), console_blocks=consoles, python=pythons[0])


def parse_console(body: str) -> list[Step]:
    steps: list[Step] = []
    lines = iter(body.splitlines())
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                command += "\n" + next(lines)
            steps.append(Step(command))
        elif steps:
            steps[-1].shown.append(line)
    return steps


def at_port(text: str, port: int) -> str:
    """The tour's address (port 8000) replaced by the test server's."""
    for host in ("localhost", "127.0.0.1"):
        text = text.replace(f"{host}:8000", f"{host}:{port}")
    return text


def normalise(text: str) -> str:
    """Lines stripped, blank ones dropped: the layout the templates are compared in."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def template(shown: list[str]) -> re.Pattern[str]:
    """The regex for shown output: ``...``, ids, ``(N ms)`` and decimals are free."""
    text = normalise("\n".join(shown))
    parts, pos = [], 0
    for match in TOKEN.finditer(text):
        parts.append(re.escape(text[pos : match.start()]))
        parts.append(TOKEN_PATTERNS[match.lastgroup or ""])
        pos = match.end()
    parts.append(re.escape(text[pos:]))
    return re.compile("".join(parts), re.DOTALL)


def assert_shown(step: Step, output: str, port: int) -> None:
    shown = [at_port(line, port) for line in step.shown]
    if not normalise("\n".join(shown)):
        assert not output.strip(), f"`{step.command}` printed, the README shows nothing:\n{output}"
        return
    assert template(shown).search(normalise(output)), (
        f"`{step.command}` printed output the README does not show.\n"
        f"README:\n{chr(10).join(shown)}\nactual:\n{output}"
    )


def shell_env(server: Server) -> dict[str, str]:
    """A newcomer's shell: the venv activated, the CLI pointed at the server by $FREIGHT_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV_BIN.parent),
        FREIGHT_URL=server.url,
        COLUMNS="120",
        NO_COLOR="1",
    )
    return env


def run_in_one_shell(
    commands: list[str], env: dict[str, str], script: Path
) -> list[tuple[int, str]]:
    """Run ``commands`` one after another in one bash; each one's exit code and output."""
    marker = f"@@readme-step-{uuid.uuid4().hex}"
    lines = ["exec 2>&1"]
    for command in commands:
        lines += [command, f"printf '\\n{marker} %d\\n' $?"]
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", str(script)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    pieces = re.split(rf"\n?{marker} (\d+)\n", done.stdout)
    results = [(int(pieces[i + 1]), pieces[i]) for i in range(0, len(pieces) - 1, 2)]
    assert len(results) == len(commands), f"the shell stopped early:\n{done.stdout}"
    return results


@pytest.fixture(scope="module")
def tour() -> Tour:
    return parse_tour(README.read_text(encoding="utf-8"))


CONSOLE_BLOCKS = len(parse_tour(README.read_text(encoding="utf-8")).console_blocks)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, examples_cache: Path) -> Iterator[Server]:
    """One ``freight serve examples/`` for the module, its ``.freight/`` state under tmp."""
    cwd = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    env["FREIGHT_CACHE_DIR"] = str(examples_cache)
    started = Server(env=env, cwd=cwd, project=EXAMPLES)
    try:
        started.start(timeout_s=120)
        wait_until(lambda: "freight: models ready:" in started.logs(), timeout_s=60)
        yield started
    finally:
        started.stop()


def test_tour_shows_the_key_facts(tour: Tour) -> None:
    """The tour runs the CLI, curl and Python on the sample inputs and shows their results."""
    steps = [step for block in tour.console_blocks for step in block]
    commands = [step.command for step in steps]

    def shown_by(prefix: str) -> str:
        step = next((s for s in steps if s.command.startswith(prefix)), None)
        assert step is not None, f"the tour has no `{prefix} ...` line"
        return "\n".join(step.shown)

    assert "digits" in shown_by("freight models")
    assert '"hello": "world"' in shown_by("freight predict echo")
    assert '"label": 7' in shown_by("freight predict digits --input examples/inputs/digit.png")
    assert '"rows": 5' in shown_by("freight predict tabular --input examples/inputs/rows.csv")
    assert shown_by("UPLOAD_URL=") == ""
    shown = [("\n".join(step.shown)) for step in steps]
    assert any('"status":"succeeded"' in text and '"slept_ms":201' in text for text in shown)
    assert any("@examples/inputs/rows.csv" in c and "$UPLOAD_URL" in c for c in commands)
    assert "succeeded {'x': 1}" in tour.python and 'file="examples/inputs/rows.csv"' in tour.python
    for sample in ("digit.png", "rows.csv"):
        assert (EXAMPLES / "inputs" / sample).is_file(), f"examples/inputs/{sample} is missing"


def test_start_lines(tour: Tour, server: Server) -> None:
    """``freight serve examples/`` prints the start-up lines the tour shows."""
    shown = [at_port(line, server.port) for line in tour.start_lines]
    assert template(shown).search(normalise(server.logs())), (
        f"README:\n{chr(10).join(shown)}\nserver printed:\n{server.logs()}"
    )


@pytest.mark.parametrize("block", range(CONSOLE_BLOCKS), ids=lambda i: f"console-{i + 1}")
def test_console_block(tour: Tour, server: Server, block: int, tmp_path: Path) -> None:
    """Every ``$`` line of the block exits 0 and prints what the README shows under it."""
    steps = tour.console_blocks[block]
    commands = [at_port(step.command, server.port) for step in steps]
    assert not any(":8000" in c for c in commands), "a command still names port 8000"
    if any(re.match(r"(\w+=\$\()?curl ", c) for c in commands) and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    results = run_in_one_shell(commands, shell_env(server), tmp_path / "tour.sh")
    for step, (code, output) in zip(steps, results, strict=True):
        assert code == 0, f"`{step.command}` exited {code}:\n{output}"
        assert_shown(step, output, server.port)


def test_upload_url_line_completes_the_prediction(
    tour: Tour, server: Server, tmp_path: Path
) -> None:
    """The tour's ``$UPLOAD_URL`` is the upload_url of the response before it, on this
    server; the PUT to it queues the prediction, which then scores the 5 sample rows."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    steps = next(b for b in tour.console_blocks if any("$UPLOAD_URL" in s.command for s in b))
    last = next(i for i, s in enumerate(steps) if "$UPLOAD_URL" in s.command)
    commands = [at_port(s.command, server.port) for s in steps[: last + 1]]
    commands.append('printf "%s\\n" "$UPLOAD_URL"')
    results = run_in_one_shell(commands, shell_env(server), tmp_path / "upload.sh")
    assert all(code == 0 for code, _ in results), results
    upload_url = results[-1][1].strip()
    assert upload_url.startswith(f"http://localhost:{server.port}/v1/predictions/"), upload_url
    prediction_id = upload_url.split("/v1/predictions/", 1)[1].split("/", 1)[0]
    put = json.loads(results[-2][1])
    assert put["id"] == prediction_id and put["status"] == "queued"
    with server.client() as client:

        def finished() -> dict[str, object] | None:
            body: dict[str, object] = client.get(f"/v1/predictions/{prediction_id}?wait=5").json()
            return body if body["status"] in ("succeeded", "failed", "canceled") else None

        done = wait_until(finished, timeout_s=60)
    assert done["status"] == "succeeded", done
    assert isinstance(done["output"], dict) and done["output"]["rows"] == 5


def test_python_block(tour: Tour, server: Server, tmp_path: Path) -> None:
    """The Python block runs from the repo root and prints what its comments say."""
    source = at_port(tour.python, server.port)
    assert ":8000" not in source
    expected = [
        match.group(1)
        for line in source.splitlines()
        if (match := re.match(r"\s*print\(.*\)\s+# (.*)$", line))
    ]
    assert expected, "the Python block shows no printed output"
    script = tmp_path / "tour.py"
    script.write_text(source)
    env = shell_env(server)
    env.pop("FREIGHT_URL")  # the block names its server itself
    done = subprocess.run(
        [str(VENV_BIN / "python"), str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert normalise(done.stdout) == normalise("\n".join(expected)), done.stdout


def test_template_rules() -> None:
    """Templates free ``...``, ids, ``(N ms)`` and decimals, and keep the rest literal."""
    pattern = template(
        ["prediction 01a232fa-f313-72e0-a1f7-2e8efd522606 ok  (5 ms)", '{"p": 0.9,...}']
    )
    other_id = "01a2ffff-0000-7000-8000-000000000000"
    assert pattern.search(f'prediction {other_id} ok  (71 ms)\n{{"p": 1.0, "rows": 5}}')
    assert not pattern.search(f'prediction {other_id} failed  (7 ms)\n{{"p": 1.0}}')
    assert not template(['{"label": 7}']).search('{"label": 1}')
    assert not template(["http://127.0.0.1:8000"]).search("http://127.0.0.2:8000")
    assert at_port("curl localhost:8000/v1 http://127.0.0.1:8000", 1234) == (
        "curl localhost:1234/v1 http://127.0.0.1:1234"
    )
