"""security_scan on a planted tree: one finding per rule where planted, none elsewhere."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from autobot import Settings
from autobot.operations import OperationStatus, run_operation
from autobot.operations.builtin._security import RULES, scan_source
from autobot.storage import Store
from tests.operations.conftest import interrupted

GITHUB_TOKEN = "ghp_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7d"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9f3kLm2T"
SLACK_TOKEN = "xoxb-2048613377-kq9WmZ4tLr7Hs2Xc"
GOOGLE_KEY = "AIza" + "SyD4kq9WmZ4tLr7Hs2Xc8nBv5GfT1pQe3Jo"

PLANTED = {
    "settings.py": f'''"""Settings with secrets in them."""
import os

AWS_ACCESS_KEY_ID = "AKIAQ3ZL7NV2WX5PTR4M"
aws_secret_access_key = "{AWS_SECRET}"
GITHUB_TOKEN = "{GITHUB_TOKEN}"
DB_PASSWORD = "hunter2"
db_user = os.environ["DB_USER"]
''',
    "web/notify.js": f"""const slack = "{SLACK_TOKEN}";
const mapsKey = "{GOOGLE_KEY}";
const apiToken = "s3cr3t-v4lue";
""",
    "deploy/id_ed25519": """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
-----END OPENSSH PRIVATE KEY-----
""",
    ".env": "DEBUG=1\nAPI_KEY=9f8e7d6c5b4a\n",
    "danger.py": """import os
import pickle
import subprocess
import yaml
from subprocess import run as launch


def handle(data, command, stream):
    eval(data)
    exec(command)
    pickle.loads(data)
    yaml.load(stream)
    subprocess.call(command, shell=True)
    os.system(command)
    os.popen(command)
    launch(command, shell=True)
""",
    "legacy.py": 'print "hello"\nos.system(cmd)\n',
    "bin/tool": "#!/usr/bin/env python3\nimport os\nos.popen('ls')\n",
}

EXPECTED = {
    ("settings.py", 4, "aws-access-key-id"),
    ("settings.py", 5, "aws-secret-access-key"),
    ("settings.py", 6, "github-token"),
    ("settings.py", 7, "hardcoded-secret"),
    ("web/notify.js", 1, "slack-token"),
    ("web/notify.js", 2, "google-api-key"),
    ("web/notify.js", 3, "hardcoded-secret"),
    ("deploy/id_ed25519", 1, "private-key"),
    (".env", 2, "hardcoded-secret"),
    ("danger.py", 9, "python-eval"),
    ("danger.py", 10, "python-exec"),
    ("danger.py", 11, "python-pickle-load"),
    ("danger.py", 12, "python-yaml-load"),
    ("danger.py", 13, "python-subprocess-shell"),
    ("danger.py", 14, "python-os-system"),
    ("danger.py", 15, "python-os-popen"),
    ("danger.py", 16, "python-subprocess-shell"),
    ("legacy.py", 2, "python-os-system"),  # no syntax tree: the regex stands in
    ("bin/tool", 3, "python-os-popen"),  # Python by its shebang
}

CLEAN = {
    "clean.py": '''"""Mentions eval(x) and exec(y) in a docstring, and os.system("rm -rf /")."""
import os
import subprocess

import yaml

# eval(user_input) would be wrong, and so would pickle.loads(blob)
password = os.environ["X"]
token = ""
api_key = "changeme"
secret = "<your-secret>"
TOKEN_TYPE = "bearer"
message = "call eval(x) and pickle.loads(y), os.popen('ls')"
AWS_EXAMPLE = "AKIAIOSFODNN7EXAMPLE"


def load(f):
    return yaml.load(f, Loader=yaml.SafeLoader)


def load_again(f):
    return yaml.safe_load(f)


def listing():
    return subprocess.run(["ls", "-l"], check=True, shell=False)


class Model:
    def eval(self):
        return self


Model().eval()
''',
    "README.md": "Never pass input to `eval()` or `os.system()`.\n",
    "config.yaml": "password: ${DB_PASSWORD}\ntoken:\n  kind: bearer\n",
    "app.js": "const token = process.env.TOKEN;\nif (password === input) {}\n",
}


def plant(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


async def scan(settings: Settings, store: Store, path: str) -> dict[str, Any]:
    run = await run_operation("security_scan", {"path": path}, settings=settings, store=store)
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    assert run.outcome.result is not None
    return run.outcome.result


def test_every_rule_is_planted_once_at_least() -> None:
    assert {rule for _, _, rule in EXPECTED} == {rule.id for rule in RULES}


async def test_every_planted_finding_and_nothing_else(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "files" / "repo"
    plant(root, PLANTED | CLEAN)
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x00AKIAQ3ZL7NV2WX5PTR4M")
    result = await scan(Settings(data_dir=tmp_path), store, "repo")

    found = {(f["path"], f["line"], f["rule"]) for f in result["findings"]}
    assert found == EXPECTED
    assert len(result["findings"]) == len(EXPECTED)
    severities = {rule.id: rule.severity for rule in RULES}
    assert all(f["severity"] == severities[f["rule"]] for f in result["findings"])
    order = ["critical", "high", "medium", "low"]
    assert [order.index(f["severity"]) for f in result["findings"]] == sorted(
        order.index(f["severity"]) for f in result["findings"]
    )

    summary = result["summary"]
    assert summary["findings"] == len(EXPECTED)
    assert summary["by_severity"] == {"critical": 3, "high": 14, "medium": 2, "low": 0}
    assert summary["by_rule"]["python-subprocess-shell"] == 2
    assert summary["by_rule"]["hardcoded-secret"] == 3
    assert summary["files_scanned"] == len(PLANTED) + len(CLEAN)
    assert summary["python_unparsed"] == 1
    assert summary["skipped_files"] == [{"path": "logo.png", "reason": "binary"}]
    assert result["findings_omitted"] == 0


async def test_snippets_mask_the_secrets(tmp_path: Path, store: Store) -> None:
    plant(tmp_path / "files" / "repo", PLANTED)
    result = await scan(Settings(data_dir=tmp_path), store, "repo")
    snippets = {(f["path"], f["line"]): f["snippet"] for f in result["findings"]}
    assert snippets[("settings.py", 7)] == 'DB_PASSWORD = "hunt***"'
    assert snippets[("settings.py", 6)] == 'GITHUB_TOKEN = "ghp_' + "*" * 36 + '"'
    assert snippets[("settings.py", 4)] == 'AWS_ACCESS_KEY_ID = "AKIA' + "*" * 16 + '"'
    assert snippets[(".env", 2)] == "API_KEY=9f8e********"
    assert snippets[("danger.py", 9)] == "eval(data)"
    every_snippet = " ".join(snippets.values())
    for secret in (GITHUB_TOKEN, AWS_SECRET, SLACK_TOKEN, GOOGLE_KEY, "hunter2", "s3cr3t-v4lue"):
        assert secret not in every_snippet


def test_a_secret_beside_a_call_is_masked_in_both_findings() -> None:
    findings, _ = scan_source("x.py", f'eval(x); subprocess_token = "{GITHUB_TOKEN}"\n')
    assert [f["rule"] for f in findings] == ["github-token", "python-eval"]
    assert all(GITHUB_TOKEN not in f["snippet"] for f in findings)


async def test_outside_and_missing_paths_are_refused(tmp_path: Path, store: Store) -> None:
    settings = Settings(data_dir=tmp_path)
    for path, code in (("/etc", "path_outside_root"), ("nowhere", "file_not_found")):
        run = await run_operation("security_scan", {"path": path}, settings=settings, store=store)
        assert run.outcome.status is OperationStatus.FAILED
        assert run.outcome.error is not None and run.outcome.error["code"] == code


async def test_a_resumed_scan_reports_what_a_clean_one_does(tmp_path: Path, store: Store) -> None:
    many = {f"pkg/m{n:03d}.py": f"import os\nos.system('job {n}')\n" for n in range(150)}
    plant(tmp_path / "clean" / "files" / "repo", PLANTED | many)
    shutil.copytree(tmp_path / "clean" / "files", tmp_path / "stopped" / "files")
    clean = await scan(Settings(data_dir=tmp_path / "clean"), store, "repo")
    settings = Settings(data_dir=tmp_path / "stopped")

    # After the first batch of 64 files, whose findings are in the checkpoint.
    checkpoint = await interrupted("security_scan", {"path": "repo"}, settings, store, after=64)
    assert checkpoint["state"]["findings"]
    run = await run_operation(
        "security_scan", {"path": "repo"}, settings=settings, store=store, checkpoint=checkpoint
    )
    assert run.context.resumed_items == 64
    assert run.outcome.result is not None
    assert run.outcome.result["findings"] == clean["findings"]
    assert run.outcome.result["summary"] == clean["summary"]
