"""Settings: defaults, overrides, and one clear line for every bad value."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

from autobot import ConfigError, Settings, load_settings
from autobot._operation_profile import DEFAULT_PROFILES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == pathlib.Path("data")
    assert settings.redis_url is None
    assert (settings.llm_provider, settings.llm_url, settings.llm_model) == (
        "ollama",
        "http://127.0.0.1:11434",
        "llama3.2",
    )
    assert settings.max_upload_bytes == 104_857_600


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "AUTOBOT_PORT": "9001",
            "AUTOBOT_DATA_DIR": "/tmp/x",
            "AUTOBOT_REDIS_URL": "redis://a:6379/1,redis://b:6380/1",
            "AUTOBOT_LLM_PROVIDER": "OpenAI",
            "AUTOBOT_LLM_URL": "http://127.0.0.1:8080/v1/",
            "AUTOBOT_MAX_UPLOAD_BYTES": "1024",
            "AUTOBOT_API_TOKEN": "s3cret",
            "AUTOBOT_REDIS_UNRELATED": "",
        }
    )
    assert settings.port == 9001
    assert settings.data_dir == pathlib.Path("/tmp/x")
    assert settings.redis_url == "redis://a:6379/1,redis://b:6380/1"
    assert settings.llm_provider == "openai"
    assert settings.llm_url == "http://127.0.0.1:8080/v1"
    assert settings.max_upload_bytes == 1024
    assert settings.api_token == "s3cret"


def test_fallback_chain_is_parsed() -> None:
    settings = load_settings(
        {
            "AUTOBOT_LLM_FALLBACK": "openai:http://10.0.0.5:8080/v1:qwen2,ollama:http://h:11434:llama3.2:latest"
        }
    )
    assert [str(spec) for spec in settings.llm_fallback] == [
        "openai:http://10.0.0.5:8080/v1:qwen2",
        "ollama:http://h:11434:llama3.2:latest",
    ]
    assert "fallback    openai:http://10.0.0.5:8080/v1:qwen2" in "\n".join(settings.summary())


def test_empty_variables_count_as_unset() -> None:
    assert load_settings({"AUTOBOT_REDIS_URL": "", "AUTOBOT_PORT": "  "}) == Settings()


def test_toml_file_sets_values_and_environment_wins(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "autobot.toml"
    config.write_text('port = 8100\nllm_model = "qwen2"\n[deadlines]\n"llm.idle" = 12\n')
    settings = load_settings({"AUTOBOT_CONFIG": str(config), "AUTOBOT_PORT": "8200"})
    assert settings.port == 8200
    assert settings.llm_model == "qwen2"
    assert settings.deadlines == {"llm.idle": 12}


def test_summary_masks_secrets() -> None:
    settings = load_settings(
        {
            "AUTOBOT_REDIS_URL": "redis://user:hunter2@db:6379/0",
            "AUTOBOT_LLM_API_KEY": "sk-live-abc",
            "AUTOBOT_API_TOKEN": "tok-xyz",
            "AUTOBOT_DEADLINE_LLM_IDLE": "40",
        }
    )
    text = "\n".join(settings.summary())
    for secret in ("hunter2", "sk-live-abc", "tok-xyz"):
        assert secret not in text
    assert "redis://user:***@db:6379/0" in text
    assert "llm.idle=40s" in text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AUTOBOT_PORT": "abc"}, "AUTOBOT_PORT: 'abc' is not a port number"),
        ({"AUTOBOT_PORT": "70000"}, "AUTOBOT_PORT: '70000' is not a port number (0-65535)"),
        (
            {"AUTOBOT_LLM_PROVIDER": "gpt"},
            "AUTOBOT_LLM_PROVIDER: 'gpt' is not one of ollama, openai",
        ),
        ({"AUTOBOT_LLM_URL": "localhost:11434"}, "AUTOBOT_LLM_URL: 'localhost:11434' is not an"),
        ({"AUTOBOT_REDIS_URL": "http://x"}, "AUTOBOT_REDIS_URL: http://x: expected a redis://"),
        ({"AUTOBOT_REDIS_URL": "redis://x:99999"}, "AUTOBOT_REDIS_URL: redis://x:99999: '99"),
        ({"AUTOBOT_MAX_UPLOAD_BYTES": "-5"}, "AUTOBOT_MAX_UPLOAD_BYTES: '-5' is not a positive"),
        (
            {"AUTOBOT_DEADLINE_LLM_IDLE": "soon"},
            "AUTOBOT_DEADLINE_LLM_IDLE: 'soon' is not a number",
        ),
        ({"AUTOBOT_DEADLINE_LLM_IDLE": "-1"}, "AUTOBOT_DEADLINE_LLM_IDLE: '-1' is not a positive"),
        ({"AUTOBOT_DEADLINE_LLM_IDEL": "3"}, "AUTOBOT_DEADLINE_LLM_IDEL: no deadline scope"),
        ({"AUTOBOT_DEADLINE_HEALTH_CHECK": "5"}, "AUTOBOT_DEADLINE_HEALTH_CHECK: 5 s must be"),
        ({"AUTOBOT_LOG_LEVEL": "loud"}, "AUTOBOT_LOG_LEVEL: 'loud' is not one of"),
        ({"AUTOBOT_LLM_FALLBACK": "ollama"}, "AUTOBOT_LLM_FALLBACK: 'ollama' is not provider:url"),
        ({"AUTOBOT_ALLOWED_HOSTS": "http://x"}, "AUTOBOT_ALLOWED_HOSTS: 'http://x' is not a host"),
        ({"AUTOBOT_ALLOWED_HOSTS": " , "}, "AUTOBOT_ALLOWED_HOSTS: ' , ' lists nothing"),
        (
            {"AUTOBOT_ALLOWED_ORIGINS": "localhost:3000"},
            "AUTOBOT_ALLOWED_ORIGINS: 'localhost:3000' is not an origin",
        ),
        (
            {"AUTOBOT_ALLOWED_ORIGINS": "https://app.example/chat"},
            "AUTOBOT_ALLOWED_ORIGINS: 'https://app.example/chat' is not an origin",
        ),
        ({"AUTOBOT_LISTEN_BACKLOG": "0"}, "AUTOBOT_LISTEN_BACKLOG: '0' is not a positive"),
        ({"AUTOBOT_LISTEN_BACKLOG": "100000"}, "AUTOBOT_LISTEN_BACKLOG: '100000' is more than"),
        ({"AUTOBOT_CONFIG": "/nonexistent/autobot.toml"}, "AUTOBOT_CONFIG: no such file"),
    ],
)
def test_each_bad_value_is_one_line_and_exit_2(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert str(caught.value).startswith(expected)

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOT_")} | environ
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {expected}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = [", "AUTOBOT_CONFIG: '{path}' is not valid TOML"),
        ('port = "x"', "autobot.toml: port: 'x' is not a port number"),
        ("colour = 1", "autobot.toml: colour: is not a setting"),
        ('[deadlines]\n"llm.nope" = 1', "autobot.toml: deadlines.llm.nope: no deadline scope"),
        ('[deadlines]\n"llm.idle" = 0', "autobot.toml: deadlines.llm.idle: 0 is not a positive"),
    ],
)
def test_bad_toml_names_file_and_key(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    config = tmp_path / "autobot.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTOBOT_CONFIG": str(config)})
    assert str(caught.value).startswith(expected.format(path=config))


# --- Cross-site checks and the listen backlog -----------------------------------


def test_cross_site_and_backlog_defaults() -> None:
    settings = load_settings({})
    assert (settings.allowed_hosts, settings.allowed_origins) == ((), ())
    assert settings.listen_backlog == 1024
    policy = settings.site_policy()
    assert policy.check_hosts  # bound to loopback: DNS rebinding is refused
    assert "hosts       localhost, loopback IPs" in settings.summary()
    assert "origins     same origin" in settings.summary()
    assert not load_settings({"AUTOBOT_HOST": "0.0.0.0"}).site_policy().check_hosts


def test_cross_site_lists_are_parsed_and_normalised(tmp_path: pathlib.Path) -> None:
    settings = load_settings(
        {
            "AUTOBOT_ALLOWED_HOSTS": "autobot.lan, Box.Example:8443,,::1",
            "AUTOBOT_ALLOWED_ORIGINS": "https://App.example/, http://localhost:3000",
            "AUTOBOT_LISTEN_BACKLOG": "4096",
        }
    )
    assert settings.allowed_hosts == ("autobot.lan", "box.example:8443", "[::1]")
    assert settings.allowed_origins == ("https://app.example", "http://localhost:3000")
    assert settings.listen_backlog == 4096

    config = tmp_path / "autobot.toml"
    config.write_text('allowed_hosts = ["a.lan", "b.lan:81"]\nallowed_origins = "*"\n')
    from_toml = load_settings({"AUTOBOT_CONFIG": str(config)})
    assert from_toml.allowed_hosts == ("a.lan", "b.lan:81")
    assert from_toml.allowed_origins == ("*",)
    assert "origins     any" in from_toml.summary()


LOCAL = ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("changes", "host", "allowed"),
    [
        ({}, "localhost:8000", True),
        ({}, "127.0.0.5", True),  # any loopback IP: no DNS, no rebinding
        ({}, "[::1]:8000", True),
        ({}, "rebound.evil.example:8000", False),
        ({}, "0.0.0.0:8000", False),
        ({}, None, True),  # no Host at all (HTTP/1.0): not a browser
        ({}, "", True),
        ({}, "local host", False),
        ({"host": "0.0.0.0"}, "anything.example", True),
        ({"host": "0.0.0.0", "allowed_hosts": ("box.lan",)}, "box.lan:1234", True),
        ({"host": "0.0.0.0", "allowed_hosts": ("box.lan",)}, "other.lan", False),
        ({"host": "0.0.0.0", "allowed_hosts": ("box.lan",)}, "127.0.0.1:8000", True),
        ({"host": "0.0.0.0", "allowed_hosts": ("box.lan:443",)}, "box.lan", False),
        ({"allowed_hosts": ("*",)}, "rebound.evil.example", True),
    ],
)
def test_which_hosts_are_answered(changes: dict, host: str | None, allowed: bool) -> None:
    policy = dataclasses.replace(Settings(), **changes).site_policy()
    assert policy.host_allowed(host, LOCAL) is allowed


@pytest.mark.parametrize(
    ("changes", "origin", "host", "allowed"),
    [
        ({}, "http://localhost:8000", "localhost:8000", True),
        ({}, "http://127.0.0.1:8000", "localhost:8000", True),  # another loopback name
        ({}, "http://localhost:3000", "localhost:8000", False),  # another local app
        ({}, "https://evil.example", "localhost:8000", False),
        ({}, "null", "localhost:8000", False),
        ({"host": "0.0.0.0"}, "http://box.lan:8000", "box.lan:8000", True),  # same origin
        ({"host": "0.0.0.0"}, "https://box.lan", "box.lan", True),  # behind a TLS proxy
        ({"host": "0.0.0.0"}, "http://localhost:8000", "box.lan:8000", False),
        ({"allowed_origins": ("https://app.example",)}, "https://app.example", "localhost", True),
        ({"allowed_origins": ("https://app.example",)}, "http://app.example", "localhost", False),
        ({"allowed_origins": ("*",)}, "null", "localhost", True),
    ],
)
def test_which_origins_are_answered(changes: dict, origin: str, host: str, allowed: bool) -> None:
    policy = dataclasses.replace(Settings(), **changes).site_policy()
    assert policy.origin_allowed(origin, host, LOCAL) is allowed


def test_operation_profiles_are_overridden_per_type_and_field(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "autobot.toml"
    config.write_text(
        "[operations.codebase_indexing]\nbase_s = 60\nper_item_s = 0.5\nmax_s = 3600\n"
        "[operations.cleanup_operation]\nfailure_threshold = 5\n"
    )
    settings = load_settings({"AUTOBOT_CONFIG": str(config), "AUTOBOT_OPERATIONS_CONCURRENCY": "5"})
    profiles = settings.timeout_profiles()
    assert settings.operations_concurrency == 5
    assert (profiles["codebase_indexing"].base_s, profiles["codebase_indexing"].max_s) == (60, 3600)
    assert profiles["codebase_indexing"].per_item_s == 0.5
    assert profiles["codebase_indexing"].checkpoint_interval_s == 30  # the default stays
    assert profiles["cleanup_operation"].failure_threshold == 5
    assert profiles["security_scan"] == DEFAULT_PROFILES["security_scan"]
    assert any("codebase_indexing" in line for line in settings.summary())


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[operations.indexing]\nbase_s = 1\n", "'indexing' is not an operation type"),
        ("[operations.security_scan]\ntimeout = 1\n", "security_scan.timeout: not a profile"),
        ("[operations.security_scan]\nbase_s = -1\n", "base_s: -1 is not a positive"),
        ("[operations.security_scan]\nbase_s = 'x'\n", "base_s: 'x' is not a positive"),
        ("[operations.security_scan]\nbase_s = 90000\n", "base_s (90000) is more than max_s"),
        ("[operations.security_scan]\nfailure_threshold = 0\n", "failure_threshold: 0"),
        ("operations = 3\n", "must be a table"),
    ],
)
def test_bad_operation_profiles_stop_start_up_naming_the_key(
    tmp_path: pathlib.Path, toml: str, problem: str
) -> None:
    config = tmp_path / "autobot.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as error:
        load_settings({"AUTOBOT_CONFIG": str(config)})
    assert problem in str(error.value)
    assert str(error.value).startswith("autobot.toml: operations")


def test_the_heartbeat_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ConfigError, match="shorter than the operation lease"):
        load_settings({"AUTOBOT_DEADLINE_OPERATION_HEARTBEAT": "10"})


def test_the_agent_heartbeat_must_be_shorter_than_the_presence() -> None:
    with pytest.raises(ConfigError, match="shorter than the agent presence"):
        load_settings({"AUTOBOT_DEADLINE_AGENT_HEARTBEAT": "30"})
