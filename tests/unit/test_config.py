"""Settings: environment over freight.yaml over defaults, validated with named errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from freight.config import GiB, KiB, Settings, load_settings
from freight.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FREIGHT_* variable of the calling shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("FREIGHT_"):
            monkeypatch.delenv(name)


def yaml_project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "freight.yaml").write_text(text)
    return tmp_path


def test_defaults_without_yaml_or_environment(tmp_path: Path) -> None:
    """A bare directory gets the documented defaults."""
    settings = load_settings(tmp_path)
    assert settings.project_dir == tmp_path
    assert settings.state_dir == Path(".freight")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.models == []
    assert settings.inline_output_max_bytes == 256 * KiB
    assert settings.max_payload_bytes == 1 * GiB
    assert settings.max_attempts == 3
    assert settings.lease_s == 30.0
    assert settings.realtime_timeout_s == 60.0
    assert settings.default_ttl_s is None
    assert settings.runner_start == ("fork" if sys.platform == "linux" else "exec")


def test_yaml_sets_values_and_ignores_feature_sections(tmp_path: Path) -> None:
    """freight.yaml sets settings; pipelines/notifications sections are not settings."""
    project = yaml_project(
        tmp_path,
        "port: 9100\nmax_attempts: 5\nmodels: ['m:A']\npipelines: {p: {steps: {}}}\n",
    )
    settings = load_settings(project)
    assert (settings.port, settings.max_attempts, settings.models) == (9100, 5, ["m:A"])


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FREIGHT_<FIELD> wins over the same field in freight.yaml."""
    project = yaml_project(tmp_path, "port: 9100\nlease_s: 10\n")
    monkeypatch.setenv("FREIGHT_PORT", "9200")
    monkeypatch.setenv("FREIGHT_MODELS", '["a:B"]')
    monkeypatch.setenv("FREIGHT_RUNNER_START", "exec")
    settings = load_settings(project)
    assert settings.port == 9200
    assert settings.lease_s == 10.0
    assert settings.models == ["a:B"]
    assert settings.runner_start == "exec"


def test_overrides_win_over_yaml_and_none_is_ignored(tmp_path: Path) -> None:
    """Explicit overrides (CLI flags) beat freight.yaml; a None override changes nothing."""
    project = yaml_project(tmp_path, "port: 9100\nhost: 0.0.0.0\n")
    settings = load_settings(project, port=9300, host=None)
    assert (settings.host, settings.port) == ("0.0.0.0", 9300)


def test_cli_flag_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit override (``freight serve --port``) beats FREIGHT_PORT."""
    monkeypatch.setenv("FREIGHT_PORT", "9200")
    assert load_settings(tmp_path, port=9300).port == 9300


def test_resolved_urls_default_to_the_state_directory(tmp_path: Path) -> None:
    """Empty database/storage URLs resolve to SQLite and a directory under state_dir."""
    settings = load_settings(tmp_path, state_dir=tmp_path / "state")
    state = (tmp_path / "state").resolve()
    assert settings.resolved_database_url == f"sqlite:///{state}/freight.db"
    assert settings.resolved_storage_url == f"file://{state}/objects"


def test_configured_urls_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured database/storage URLs are used as given."""
    monkeypatch.setenv("FREIGHT_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("FREIGHT_STORAGE_URL", "s3://bucket/prefix")
    settings = load_settings(tmp_path)
    assert settings.resolved_database_url == "postgresql://u@h/db"
    assert settings.resolved_storage_url == "s3://bucket/prefix"


def test_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    """Without secret_key, a key is generated into state_dir and reused."""
    settings = Settings(state_dir=tmp_path / "state")
    key = settings.secret()
    assert len(key) == 64 and settings.secret() == key
    assert ((tmp_path / "state" / "secret.key").stat().st_mode & 0o777) == 0o600
    assert Settings(secret_key="abc").secret() == b"abc"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("port: notanumber\n", "port"),
        ("port: 70000\n", "port"),
        ("max_attempts: 0\n", "max_attempts"),
        ("lease_s: -1\n", "lease_s"),
        ("models: not-a-list\n", "models"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("runner_start: spawn\n", "runner_start"),
    ],
)
def test_invalid_yaml_values_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    """A wrong value in freight.yaml raises ConfigError whose message names the field."""
    with pytest.raises(ConfigError) as info:
        load_settings(yaml_project(tmp_path, text))
    assert f"{field}:" in info.value.message
    assert info.value.code == "config_error"


def test_invalid_environment_value_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong FREIGHT_* value raises ConfigError naming the field."""
    monkeypatch.setenv("FREIGHT_REALTIME_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="realtime_timeout_s"):
        load_settings(tmp_path)


@pytest.mark.parametrize("text", ["port: [unclosed\n", "key: value\n  bad: indent\n"])
def test_invalid_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    """freight.yaml that does not parse raises ConfigError naming the file."""
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_settings(yaml_project(tmp_path, text))
    assert info.value.detail["path"].endswith("freight.yaml")


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    """A freight.yaml whose top level is not a mapping is refused."""
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(yaml_project(tmp_path, "- port\n- 1\n"))


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    """An empty freight.yaml is the same as none."""
    assert load_settings(yaml_project(tmp_path, "")).port == 8000
