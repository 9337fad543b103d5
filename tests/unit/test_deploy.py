"""deploy/: the Kubernetes manifests, the KEDA objects, docker-compose.yml and the
Dockerfile, validated offline, and checked against freight itself.

- Kubernetes objects: against the Kubernetes JSON schemas that the
  ``kubernetes-validate`` package ships (strict: unknown fields fail), for the
  oldest and the newest Kubernetes version checked here.
- KEDA's ScaledObject and TriggerAuthentication: against the hand-written JSON
  schemas of ``deploy/schemas/`` (after KEDA's CRD; see their ``$comment``).
- docker-compose.yml: parsed by ``compose-spec`` (the Rust ``compose_spec``
  parser: unknown keys, bad enum values and malformed fields fail).

Then the cross-references no schema sees: every command is a real ``freight``
subcommand with real options, every ``FREIGHT_*`` variable a real setting with a
valid value, every ``--model`` a model of examples/, every ScaledObject aimed at
an existing worker Deployment, Service selectors matching pod labels, probes on
declared ports. The KEDA backlog queries run on a migrated PostgreSQL, where
their plans must use the partial indexes. Nothing here reaches the network.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from compose_spec import PyOptions
from kubernetes_validate.utils import latest_version
from typer.testing import CliRunner

from freight.cli import app
from freight.config import Settings, load_settings
from freight.storage.s3 import S3Storage
from freight.store._migrate import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
EXAMPLES = ROOT / "examples"
CLUSTER_DOC = ROOT / "docs" / "how-to" / "cluster.md"

#: where the image puts the example project (WORKDIR /app, COPY examples ./examples)
PROJECT_IN_IMAGE = "/app/examples"
#: the oldest Kubernetes the manifests are meant for, and the newest schema shipped
K8S_VERSIONS = ("1.29", latest_version())
#: variables freight reads besides its settings (docs/reference/configuration.md)
FREIGHT_EXTRA_ENV = {"FREIGHT_URL", "FREIGHT_CACHE_DIR"}
#: the S3 credentials the object store client reads from the environment
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"}
#: options another change adds to freight; until then the CLI checks skip them
PENDING_OPTIONS = {("worker", "--model")}
#: the worker that stays up at zero backlog: some agent must reap, deliver, purge
ALWAYS_ON_MODEL = "echo"
#: apimachinery's resource.Quantity syntax
QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# -- loading -------------------------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


MANIFEST_FILES = sorted(K8S.rglob("*.yaml"))
MANIFESTS: list[tuple[Path, dict[str, Any]]] = [
    (path, doc) for path in MANIFEST_FILES for doc in _documents(path)
]


def _rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


def _objects(kind: str, under: Path = K8S) -> list[dict[str, Any]]:
    return [doc for path, doc in MANIFESTS if doc["kind"] == kind and under in path.parents]


def _named(kind: str, under: Path = K8S) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _objects(kind, under)}


def _workers() -> dict[str, dict[str, Any]]:
    """The worker Deployments of deploy/kubernetes/workers/, by name."""
    return _named("Deployment", K8S / "workers")


def _scaled_objects(style: str) -> dict[str, dict[str, Any]]:
    return _named("ScaledObject", K8S / f"scaling-{style}")


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod_spec(workload)["containers"]
    return dict(container)


def _compose() -> dict[str, Any]:
    parsed = PyOptions(apply_merge=True).from_yaml(COMPOSE.read_text())
    parsed.validate()
    return parsed.to_dict()


def _compose_freight_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: s for name, s in services.items() if s.get("image") == "freight:dev"}


@pytest.fixture(scope="module")
def example_models() -> dict[str, dict[str, int]]:
    """The models of examples/, by discovery in a separate interpreter: importing the
    example modules here would leave ``echo``, ``sleep``... in this process's
    ``sys.modules`` for the tests that follow."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from freight.registry import discover\n"
        "specs = discover(Path(sys.argv[1]))\n"
        "print(json.dumps({n: {'max_size': s.batching.max_size, 'replicas_min': s.replicas.min}"
        " for n, s in specs.items()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    models: dict[str, dict[str, int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return models


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Validation must work offline: any socket connect off the loopback fails."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise OSError(f"test_deploy is offline: connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield


# -- the CLI, the settings ---------------------------------------------------------------------


def _cli() -> Any:
    """The freight command group (typer's own copy of click: duck-typed here)."""
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")
    return command


def _check_freight_command(argv: list[str], where: str) -> tuple[str, dict[str, list[str]]]:
    """Assert ``argv`` is a valid freight command line; return its subcommand and
    options (each option's values, in order)."""
    assert argv[0] == "freight", f"{where}: not a freight command: {argv}"
    group = _cli()
    sub = argv[1]
    assert sub in group.commands, f"{where}: no `freight {sub}` (have {sorted(group.commands)})"
    command = group.commands[sub]
    options = {o: p for p in command.params if p.param_type_name == "option" for o in p.opts}
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    seen: dict[str, list[str]] = {}
    positionals: list[str] = []
    rest = iter(argv[2:])
    for token in rest:
        if not token.startswith("-"):
            positionals.append(token)
            continue
        param = options.get(token)
        if param is None:
            assert (sub, token) in PENDING_OPTIONS, f"{where}: `freight {sub}` has no {token}"
            seen.setdefault(token, []).append(next(rest))
            continue
        seen.setdefault(token, []).append("" if param.is_flag else next(rest))
    assert len(positionals) <= len(arguments), f"{where}: extra arguments {positionals}"
    if arguments:
        assert positionals == [PROJECT_IN_IMAGE], f"{where}: the project dir is {positionals}"
    return sub, seen


def _check_env_names(names: set[str], where: str) -> None:
    settings = {f"FREIGHT_{name.upper()}" for name in Settings.model_fields}
    for name in sorted(names):
        if name.startswith("FREIGHT_"):
            assert name in settings | FREIGHT_EXTRA_ENV, f"{where}: {name} is no freight setting"
        else:
            assert name in AWS_ENV, f"{where}: {name} is neither FREIGHT_* nor an S3 credential"


def _check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The values load as freight's settings, and both URLs open as the cluster shape's."""
    _check_env_names(set(env), where)
    # the environment beats --host/--port: shared values would move every process
    assert not {"FREIGHT_HOST", "FREIGHT_PORT"} & set(env), f"{where}: use --host/--port"
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"FREIGHT_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(EXAMPLES)
    assert sqlalchemy_url(settings.database_url).startswith("postgresql+psycopg://"), where
    assert settings.storage_url.startswith("s3://"), where
    S3Storage.from_url(settings.storage_url)  # bucket, endpoint, region parse; no I/O


def test_the_cli_has_every_subcommand_the_deployment_runs() -> None:
    runner = CliRunner()
    for sub in ("api", "worker", "migrate", "serve"):
        result = runner.invoke(app, [sub, "--help"])
        assert result.exit_code == 0, (sub, result.output)
        assert "--help" in result.output


# -- Kubernetes: schemas -------------------------------------------------------------------


def test_there_are_manifests_of_every_kind() -> None:
    kinds = Counter(doc["kind"] for _, doc in MANIFESTS)
    for kind in ("ConfigMap", "Secret", "Job", "Deployment", "Service", "ScaledObject"):
        assert kinds[kind] >= 1, kind
    assert kinds["TriggerAuthentication"] == 1


@pytest.mark.parametrize(
    ("path", "doc"),
    [pytest.param(p, d, id=f"{_rel(p)}:{d['kind']}/{d['metadata']['name']}") for p, d in MANIFESTS],
)
def test_manifest_is_valid(path: Path, doc: dict[str, Any]) -> None:
    assert set(doc) >= {"apiVersion", "kind", "metadata"}
    assert "namespace" not in doc["metadata"], "namespace-agnostic: apply with -n"
    assert doc["kind"] != "Namespace"
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        _validator(doc["kind"]).validate(doc)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}-keda-v1alpha1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_validators_reject_mistakes() -> None:
    """Not vacuous: a typo, a wrong type, a missing required field each fail."""
    api = _named("Deployment")["freight-api"]
    typo = copy.deepcopy(api)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(jsonschema.ValidationError, match="paht"):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)
    wrong = copy.deepcopy(api)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSIONS[-1], strict=True)

    scaled = _scaled_objects("postgresql")["freight-worker-tabular"]
    validator = _validator("ScaledObject")
    broken: list[Any] = []
    for path, value in [
        (("spec", "scaleTargetRef"), None),
        (("spec", "minReplicaCount"), -1),
        (("spec", "minReplicaCount"), "0"),
        (("spec", "pollingIntervall"), 5),
        (("spec", "triggers", 0, "type"), "postgres"),
        (("spec", "triggers", 0, "metadata", "targetQueryValue"), None),
        (("spec", "triggers", 0, "metadata", "targetQueryValue"), 8),
        (("spec", "triggers", 0, "authenticationRef"), None),
    ]:
        bad = copy.deepcopy(scaled)
        *parents, last = path
        node = bad
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        broken.append(bad)
    for bad in broken:
        assert list(validator.iter_errors(bad)), bad
    prometheus = copy.deepcopy(_scaled_objects("prometheus")["freight-worker-tabular"])
    del prometheus["spec"]["triggers"][0]["metadata"]["threshold"]
    assert list(validator.iter_errors(prometheus))

    auth = copy.deepcopy(next(iter(_named("TriggerAuthentication").values())))
    del auth["spec"]["secretTargetRef"][0]["key"]
    assert list(_validator("TriggerAuthentication").iter_errors(auth))

    with pytest.raises(ValueError, match="comand"):
        PyOptions(apply_merge=True).from_yaml("services:\n  a:\n    image: x\n    comand: [a]\n")


def test_resource_quantities_are_well_formed() -> None:
    """The JSON schemas take any string as a quantity; the API server does not."""
    for workload in _objects("Deployment") + _objects("Job"):
        resources = _container(workload)["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"], workload["metadata"]["name"]
        for section in ("requests", "limits"):
            for name, value in resources.get(section, {}).items():
                assert QUANTITY.match(str(value)), (workload["metadata"]["name"], name, value)


# -- Kubernetes: cross-references ----------------------------------------------------------


def test_every_pod_reads_the_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config_maps, secrets = _named("ConfigMap"), _named("Secret")
    env = dict(config_maps["freight-config"]["data"]) | dict(
        secrets["freight-secrets"]["stringData"]
    )
    _check_settings(env, monkeypatch, "00-config.yaml")
    for workload in _objects("Deployment") + _objects("Job"):
        container = _container(workload)
        refs = container["envFrom"]
        assert {"configMapRef": {"name": "freight-config"}} in refs
        assert {"secretRef": {"name": "freight-secrets"}} in refs
        for item in container.get("env", []):
            _check_env_names({item["name"]}, workload["metadata"]["name"])


def test_every_container_runs_a_real_freight_command() -> None:
    commands: Counter[str] = Counter()
    for workload in _objects("Deployment") + _objects("Job"):
        name = workload["metadata"]["name"]
        sub, _ = _check_freight_command(_container(workload)["command"], name)
        commands[sub] += 1
    assert commands["api"] == 1 and commands["migrate"] == 1
    assert commands["worker"] == len(_workers())


def test_the_pods_match_the_image_user() -> None:
    user = re.search(r"^USER (\d+)$", DOCKERFILE.read_text(), re.M)
    assert user is not None
    for workload in _objects("Deployment") + _objects("Job"):
        security = _pod_spec(workload)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(user.group(1)), workload["metadata"]["name"]
        container = _container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/freight", "/tmp"} <= mounts  # FREIGHT_STATE_DIR, temp files


def _probe_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _check_probes(container: dict[str, Any], where: str) -> int:
    """Every probe is an httpGet on a declared port; return that port's number."""
    ports = _probe_ports(container)
    numbers = set()
    for kind, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        get = container[kind]["httpGet"]
        assert get["path"] == path, (where, kind)
        port = get["port"]
        assert port in ports or port in ports.values(), (where, kind, port)
        numbers.add(ports.get(port, port))
    (number,) = numbers
    return int(number)


def test_the_api_deployment_and_service() -> None:
    api = _named("Deployment")["freight-api"]
    assert api["spec"]["replicas"] == 2
    container = _container(api)
    port = _check_probes(container, "freight-api")
    _, options = _check_freight_command(container["command"], "freight-api")
    assert options["--port"] == [str(port)] == ["8000"]
    assert options["--host"] == ["0.0.0.0"]
    pod = api["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    selector = api["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()

    service = _named("Service")["freight-api"]
    assert service["spec"]["selector"] == selector
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in _probe_ports(container)
    budget = _named("PodDisruptionBudget")["freight-api"]
    assert budget["spec"]["selector"]["matchLabels"] == selector


def test_services_select_the_pods_of_a_deployment() -> None:
    for name, service in _named("Service").items():
        selector = service["spec"]["selector"].items()
        matches = [
            d
            for d in _objects("Deployment")
            if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, (name, [d["metadata"]["name"] for d in matches])
        ports = _probe_ports(_container(matches[0]))
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), (name, target)


def test_one_worker_deployment_per_example_model(example_models: dict[str, Any]) -> None:
    served: list[str] = []
    for name, worker in _workers().items():
        container = _container(worker)
        _, options = _check_freight_command(container["command"], name)
        (model,) = options["--model"]
        served.append(model)
        assert name == f"freight-worker-{model}"
        port = _check_probes(container, name)
        assert options["--port"] == [str(port)]
        assert options["--host"] == ["0.0.0.0"]
        template = worker["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert template["metadata"]["labels"]["freight/model"] == model
        selector = worker["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        assert selector["freight/model"] == model  # no two workers share pods
        assert "replicas" not in worker["spec"], f"{name}: KEDA owns the replica count"
        # SIGTERM drains for FREIGHT_DRAIN_GRACE_S; the pod must outlive the drain
        drain = float(_named("ConfigMap")["freight-config"]["data"]["FREIGHT_DRAIN_GRACE_S"])
        assert _pod_spec(worker)["terminationGracePeriodSeconds"] > drain
    assert sorted(served) == sorted(example_models)


def test_a_gpu_worker_requests_a_gpu_and_lands_on_a_gpu_node() -> None:
    gpu_workers = [
        w for w in _workers().values() if "nvidia.com/gpu" in _container(w)["resources"]["limits"]
    ]
    assert gpu_workers
    for worker in gpu_workers:
        resources = _container(worker)["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
        # extended resources: a request, if given, must equal the limit
        limit = resources["limits"]["nvidia.com/gpu"]
        assert resources["requests"].get("nvidia.com/gpu", limit) == limit
        pod = _pod_spec(worker)
        assert pod["nodeSelector"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


def test_the_migrate_job() -> None:
    (job,) = _objects("Job")
    sub, _ = _check_freight_command(_container(job)["command"], "freight-migrate")
    assert sub == "migrate"
    assert _pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


# -- KEDA ----------------------------------------------------------------------------------


def _trigger(scaled: dict[str, Any]) -> dict[str, Any]:
    (trigger,) = scaled["spec"]["triggers"]
    return dict(trigger)


def _model_of(scaled: dict[str, Any]) -> str:
    target = scaled["spec"]["scaleTargetRef"]
    workers = _workers()
    assert target["name"] in workers, f"no worker Deployment {target['name']}"
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    _, options = _check_freight_command(_container(workers[target["name"]])["command"], "")
    (model,) = options["--model"]
    return model


def _query_for(model: str) -> str:
    return (
        f"SELECT (SELECT count(*) FROM predictions WHERE status = 'queued' AND target = '{model}')"
        f" + (SELECT count(*) FROM predictions WHERE status = 'running' AND target = '{model}')"
    )


@pytest.mark.parametrize("style", ["postgresql", "prometheus"])
def test_one_scaled_object_per_worker(style: str, example_models: dict[str, Any]) -> None:
    scaled_objects = _scaled_objects(style)
    targets = Counter(s["spec"]["scaleTargetRef"]["name"] for s in scaled_objects.values())
    assert sorted(targets) == sorted(_workers()), "every worker, once"
    assert max(targets.values()) == 1
    for name, scaled in scaled_objects.items():
        model = _model_of(scaled)
        spec = scaled["spec"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"], name  # the CRD's CEL rule
        assert spec["minReplicaCount"] == (1 if model == ALWAYS_ON_MODEL else 0), name
        trigger = _trigger(scaled)
        assert trigger["type"] == style
        key = "targetQueryValue" if style == "postgresql" else "threshold"
        per_pod = float(trigger["metadata"][key])
        # a pod is started for at least a full batch of backlog
        assert per_pod >= example_models[model]["max_size"], (name, per_pod)


def test_the_postgresql_triggers_count_the_models_backlog() -> None:
    auths = _named("TriggerAuthentication")
    secrets = _named("Secret")
    for name, scaled in _scaled_objects("postgresql").items():
        trigger = _trigger(scaled)
        assert trigger["metadata"]["query"] == _query_for(_model_of(scaled)), name
        assert "IN (" not in trigger["metadata"]["query"]  # see the partial-index test
        auth = auths[trigger["authenticationRef"]["name"]]
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "connection"
        assert ref["key"] in secrets[ref["name"]]["stringData"]
        assert ref["key"] == "FREIGHT_DATABASE_URL"  # the URL freight itself uses


def test_the_prometheus_triggers_read_freights_backlog_metric() -> None:
    source = (ROOT / "src" / "freight" / "metrics.py").read_text()
    exported = set(re.findall(r'"(freight_[a-z_]+)"', source))
    for name, scaled in _scaled_objects("prometheus").items():
        metadata = _trigger(scaled)["metadata"]
        match = re.fullmatch(r'max\((freight_[a-z_]+)\{target="([^"]+)"\}\)', metadata["query"])
        assert match is not None, (name, metadata["query"])
        metric, target = match.groups()
        assert metric in exported, f"{metric} is not a freight metric ({sorted(exported)})"
        assert target == _model_of(scaled)
        assert urlsplit(metadata["serverAddress"]).scheme in ("http", "https")


def test_the_backlog_queries_use_the_partial_indexes(postgres_url: str) -> None:
    """On a migrated PostgreSQL, with a history far larger than the backlog: each
    query counts exactly the model's queued and running rows, through the two
    partial indexes (not the model's whole history)."""
    import psycopg

    models = ["tabular", "echo", "sleep", "digits"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO predictions (id, target, status, created_at, kind, priority,
                                     attempts, max_attempts, timeout_s, finished_at)
            SELECT 'p' || g, (ARRAY['tabular', 'echo', 'sleep', 'digits'])[1 + g % 4],
                   CASE WHEN g % 500 < 4 THEN 'queued'
                        WHEN g % 500 < 8 THEN 'running'
                        WHEN g % 500 < 12 THEN 'awaiting_input'
                        ELSE 'succeeded' END,
                   g, 'model', 0, 1, 3, 60.0, CASE WHEN g % 500 >= 12 THEN g END
            FROM generate_series(1, 40000) AS g
            """
        )
        conn.execute("ANALYZE predictions")
        scaled = {_model_of(s): s for s in _scaled_objects("postgresql").values()}
        for model in models:
            query = _trigger(scaled[model])["metadata"]["query"]
            expected = conn.execute(
                "SELECT count(*) FROM predictions WHERE target = %s"
                " AND status IN ('queued', 'running')",
                (model,),
            ).fetchone()
            assert expected is not None and expected[0] > 0
            assert conn.execute(query).fetchone() == expected, model
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + query).fetchone()
            assert plan is not None
            indexes = set(re.findall(r'"Index Name": "([a-z_]+)"', json.dumps(plan[0])))
            assert indexes == {"ix_predictions_claim", "ix_predictions_running_target"}, (
                model,
                indexes,
            )


# -- docker compose ------------------------------------------------------------------------


def test_compose_file_parses_and_references_resolve() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose.get("volumes", {}), (name, source)
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports
    assert services["postgres"]["image"] == "postgres:16"


def test_compose_services_run_real_freight_commands(
    monkeypatch: pytest.MonkeyPatch, example_models: dict[str, Any]
) -> None:
    services = _compose_freight_services()
    by_command: dict[str, list[str]] = {}
    served: list[str] = []
    for name, service in services.items():
        sub, options = _check_freight_command(service["command"], name)
        by_command.setdefault(sub, []).append(name)
        _check_settings(dict(service["environment"]), monkeypatch, name)
        if sub in ("api", "worker"):
            depends = service["depends_on"]
            assert depends["migrate"]["condition"] == "service_completed_successfully"
            assert depends["create-bucket"]["condition"] == "service_completed_successfully"
            test = service["healthcheck"]["test"]
            assert f"127.0.0.1:{options['--port'][0]}/readyz" in " ".join(test), name
        if sub == "api":
            assert any(p.endswith(f":{options['--port'][0]}") for p in service["ports"]), name
        if sub == "worker":
            served += options["--model"]
            assert "stop_grace_period" in service
            assert "ports" not in service, f"{name}: a host port stops --scale"
    assert by_command["migrate"] == ["migrate"]
    assert len(by_command["api"]) == 2
    assert by_command["worker"]
    assert sorted(served) == sorted(example_models), "every model has one worker"


def test_compose_store_and_database_match_freights_urls() -> None:
    services = _compose()["services"]
    env = dict(next(iter(_compose_freight_services().values()))["environment"])
    database = urlsplit(env["FREIGHT_DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres"
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]

    storage = urlsplit(env["FREIGHT_STORAGE_URL"])
    endpoint = urlsplit(parse_qs(storage.query)["endpoint"][0])
    assert endpoint.hostname in services
    minio = services[endpoint.hostname]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    (script,) = services["create-bucket"]["command"]
    words = shlex.split(script)
    assert f"local/{storage.netloc}" in words, "create-bucket makes the bucket freight uses"


def test_every_compose_service_env_is_shared() -> None:
    """One set of settings for every freight process (a per-service drift, a second
    FREIGHT_SECRET_KEY say, would break signed URLs across the two APIs)."""
    environments = {
        json.dumps(s["environment"], sort_keys=True) for s in _compose_freight_services().values()
    }
    assert len(environments) == 1


# -- the image, the docs -------------------------------------------------------------------


def test_the_dockerfile_installs_what_the_manifests_run() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.12-slim$", text, re.M)
    extras = set(re.findall(r'pip install "\.\[([a-z,]+)\]"', text)[0].split(","))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras <= set(declared), f"unknown extras {extras - set(declared)}"
    assert re.search(r"^WORKDIR /app$", text, re.M)
    assert re.search(r"^COPY examples \./examples$", text, re.M)  # = PROJECT_IN_IMAGE
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert {8000, 9090} <= exposed
    _check_env_names(set(re.findall(r"\b(FREIGHT_[A-Z_]+)=", text)), "Dockerfile")
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for copied in ("pyproject.toml", "README.md", "src/", "examples/"):
        assert f"!{copied}" in ignore


def test_the_cluster_guide_names_only_existing_files() -> None:
    text = CLUSTER_DOC.read_text()
    paths = set(re.findall(r"\bdeploy/[A-Za-z0-9_./-]*[A-Za-z0-9_/]", text))
    assert paths
    for path in sorted(paths):
        assert (ROOT / path).exists(), f"{CLUSTER_DOC.name} names {path}, which is missing"


# -- what another change adds ----------------------------------------------------------------


def test_worker_model_option_takes_the_models_the_deployment_names() -> None:
    """``freight worker --model NAME``: the manifests pass one, docker-compose.yml
    several to one worker, so the option must be repeatable."""
    worker = _cli().commands["worker"]
    option = next((p for p in worker.params if "--model" in getattr(p, "opts", ())), None)
    if option is None:
        pytest.skip("`freight worker --model` is not in this freight yet")
    repeated = any(
        len(_check_freight_command(s["command"], n)[1].get("--model", [])) > 1
        for n, s in _compose_freight_services().items()
    )
    if repeated:
        assert option.multiple, "docker-compose.yml repeats --model"
