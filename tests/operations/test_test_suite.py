"""comprehensive_test_suite and integration_testing: real pytest subprocesses on a real tree."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import trio

from autobot import Settings
from autobot._errors import ValidationFailed
from autobot.operations import (
    OperationContext,
    OperationStatus,
    execute,
    registry,
    run_operation,
)
from autobot.storage import Store
from tests.operations.conftest import write_tree
from tests.support.polling import eventually


def by_file(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["file"]: entry for entry in result["files"]}


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_text(path: pathlib.Path) -> str:
    return path.read_text() if path.exists() else ""


async def file_text(path: pathlib.Path) -> str:
    await trio.lowlevel.checkpoint()
    return read_text(path)


SUITE = {
    "files/suite/test_pass.py": """
        import os

        def test_one():
            assert 1 + 1 == 2

        def test_environment_is_the_servers_minus_its_own_settings():
            assert "AUTOBOT_PROBE" not in os.environ
            assert os.environ.get("UNRELATED_PROBE") == "kept"
    """,
    "files/suite/test_planted.py": """
        def test_fine():
            pass

        def test_planted_failure():
            assert 6 * 7 == 43, "planted failure"
    """,
    "files/suite/test_broken.py": """
        import module_that_does_not_exist

        def test_never_collected():
            pass
    """,
    "files/suite/test_skipped.py": """
        import pytest

        @pytest.mark.skip(reason="skipped on purpose")
        def test_skipped():
            pass
    """,
    "files/suite/helpers.py": "VALUE = 1\n",
}


@pytest.mark.slow
async def test_counts_per_file_and_in_total(
    tmp_path: pathlib.Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, SUITE)
    # The server's environment must not configure the children: an option pytest
    # does not know would make every file a usage error.
    monkeypatch.setenv("PYTEST_ADDOPTS", "--no-such-option")
    monkeypatch.setenv("AUTOBOT_PROBE", "server only")
    monkeypatch.setenv("UNRELATED_PROBE", "kept")

    run = await run_operation(
        "comprehensive_test_suite",
        {"path": "suite"},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )

    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result
    assert result is not None
    files = by_file(result)
    assert sorted(files) == ["test_broken.py", "test_pass.py", "test_planted.py", "test_skipped.py"]

    def counts(entry: dict[str, Any]) -> tuple[int, int, int, int]:
        return entry["passed"], entry["failed"], entry["errors"], entry["skipped"]

    assert counts(files["test_pass.py"]) == (2, 0, 0, 0)
    assert files["test_pass.py"]["status"] == "passed"
    assert counts(files["test_planted.py"]) == (1, 1, 0, 0)
    assert files["test_planted.py"]["status"] == "failed"
    assert files["test_planted.py"]["exit_code"] == 1
    [planted] = files["test_planted.py"]["failed_tests"]
    assert planted["test"] == "test_planted.py::test_planted_failure"
    assert planted["outcome"] == "failed"
    assert "planted failure" in planted["message"]
    assert counts(files["test_broken.py"]) == (0, 0, 1, 0)
    assert files["test_broken.py"]["exit_code"] == 2
    [broken] = files["test_broken.py"]["failed_tests"]
    assert broken["test"] == "test_broken.py"
    assert "module_that_does_not_exist" in broken["message"]
    assert counts(files["test_skipped.py"]) == (0, 0, 0, 1)
    assert files["test_skipped.py"]["status"] == "skipped"

    totals = result["totals"]
    assert (totals["passed"], totals["failed"], totals["errors"], totals["skipped"]) == (3, 1, 1, 1)
    assert totals["files"] == 4
    assert (totals["files_passed"], totals["files_failed"], totals["files_not_run"]) == (1, 2, 0)
    # Failing tests and collection errors are results: no item failed.
    assert "failed_items" not in result
    assert run.context.processed_items == 4
    # Scratch reports are gone, and the tree got no bytecode caches.
    assert not (tmp_path / "operations" / "local").exists()
    assert not list((tmp_path / "files").rglob("__pycache__"))


async def test_configuration_comes_from_inside_the_files_root_only(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(
        tmp_path,
        {
            # Above the files root: what a server's own project configuration is.
            "pyproject.toml": '[tool.pytest.ini_options]\naddopts = "--no-such-option"\n',
            "files/proj/pytest.ini": "[pytest]\npython_functions = check_*\n",
            "files/proj/test_custom.py": "def check_thing():\n    pass\n",
            "files/plain/test_plain.py": "def test_plain():\n    pass\n",
        },
    )
    run = await run_operation(
        "comprehensive_test_suite", {"path": "."}, settings=Settings(data_dir=tmp_path), store=store
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    files = by_file(run.outcome.result or {})
    # check_thing is a test only under proj/pytest.ini; the pyproject.toml above is ignored.
    assert files["proj/test_custom.py"]["passed"] == 1
    assert files["plain/test_plain.py"]["passed"] == 1
    assert run.outcome.result["totals"]["files_not_run"] == 0


def _context(tmp_path: pathlib.Path, store: Store, saved: list[dict[str, Any]]) -> OperationContext:
    op_type = registry["comprehensive_test_suite"]

    async def keep(record: dict[str, Any]) -> None:
        saved.append(record)

    return OperationContext(
        operation_id="first",
        type_name=op_type.name,
        profile=op_type.profile,
        checkpoint_every_item=op_type.checkpoint_every_item,
        settings=Settings(data_dir=tmp_path),
        store=store,
        save_checkpoint=keep,
    )


@pytest.mark.slow
async def test_resume_after_cancel_does_not_rerun_finished_files(
    tmp_path: pathlib.Path, store: Store
) -> None:
    log = tmp_path / "runs.log"
    running = """
        import pathlib, time
        LOG = pathlib.Path({log!r})
        with LOG.open("a") as file:
            file.write("{name}\\n")
        if {hang} and LOG.read_text().split().count("{name}") == 1:
            time.sleep(60)  # only the first time: the test cancels the run here

        def test_ran():
            pass
    """
    write_tree(
        tmp_path,
        {
            f"files/suite/test_{name}.py": running.format(log=str(log), name=name, hang=name == "b")
            for name in "abc"
        },
    )
    saved: list[dict[str, Any]] = []
    ctx = _context(tmp_path, store, saved)
    op_type = registry["comprehensive_test_suite"]
    params = op_type.parse_params({"path": "suite"})

    async def b_started() -> bool:
        return "b" in (await file_text(log)).split()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute, op_type, ctx, params, None)
            await eventually(b_started)
            nursery.cancel_scope.cancel()

    assert (await file_text(log)).split() == ["a", "b"]
    # What the runner saves on cancel: the state after the last finished file.
    record = ctx.checkpoint_record() or saved[-1]
    assert record["processed_items"] == 1
    assert record["state"]["done"] == ["test_a.py"]
    assert not (tmp_path / "operations" / "first").exists()

    resumed = await run_operation(
        "comprehensive_test_suite",
        {"path": "suite"},
        settings=Settings(data_dir=tmp_path),
        store=store,
        checkpoint=record,
    )
    assert resumed.outcome.status is OperationStatus.COMPLETED, resumed.outcome.error
    # a ran once; b ran again (it never finished); c ran once.
    assert (await file_text(log)).split() == ["a", "b", "b", "c"]
    result = resumed.outcome.result or {}
    assert sorted(by_file(result)) == ["test_a.py", "test_b.py", "test_c.py"]
    assert result["totals"]["passed"] == 3
    assert result["totals"]["files"] == 3


HANG = """
    import os, pathlib, time
    pathlib.Path({pid_file!r}).write_text(str(os.getpid()))
    time.sleep(60)

    def test_never():
        pass
"""


async def test_cancelling_the_operation_kills_the_running_pytest(
    tmp_path: pathlib.Path, store: Store
) -> None:
    pid_file = tmp_path / "pid"
    write_tree(tmp_path, {"files/suite/test_hang.py": HANG.format(pid_file=str(pid_file))})
    ctx = _context(tmp_path, store, [])
    op_type = registry["comprehensive_test_suite"]
    params = op_type.parse_params({"path": "suite"})

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute, op_type, ctx, params, None)
            pid = int(await eventually(lambda: file_text(pid_file)))
            assert process_exists(pid)
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
    stopped_s = trio.current_time() - cancelled_at

    assert stopped_s < 1.0
    assert not process_exists(pid)


@pytest.mark.slow
async def test_a_file_over_its_deadline_is_a_failed_item_and_is_killed(
    tmp_path: pathlib.Path, store: Store
) -> None:
    pid_file = tmp_path / "pid"
    write_tree(
        tmp_path,
        {
            "files/suite/test_hang.py": HANG.format(pid_file=str(pid_file)),
            "files/suite/test_later.py": "def test_later():\n    pass\n",
        },
    )
    # Small enough to be quick, large enough for pytest to start on a busy machine.
    settings = Settings(
        data_dir=tmp_path, operation_profiles={"comprehensive_test_suite": {"per_item_s": 5.0}}
    )
    with trio.fail_after(20):
        run = await run_operation(
            "comprehensive_test_suite", {"path": "suite"}, settings=settings, store=store
        )

    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    files = by_file(result)
    assert files["test_hang.py"]["status"] == "not_run"
    assert "operation.item" in files["test_hang.py"]["error"]
    assert files["test_later.py"]["passed"] == 1  # the next file still ran
    assert result["failed_items"] == 1
    assert result["failures"][0]["item"] == "test_hang.py"
    assert result["totals"]["files_not_run"] == 1
    assert not process_exists(int(pid_file.read_text()))


async def test_a_file_pytest_cannot_run_is_a_failed_item(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(
        tmp_path,
        {
            # A conftest that does not import is a usage error (status 4) for the file.
            "files/suite/conftest.py": "raise RuntimeError('conftest is broken')\n",
            "files/suite/test_x.py": "def test_x():\n    pass\n",
        },
    )
    run = await run_operation(
        "comprehensive_test_suite",
        {"path": "suite"},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    [entry] = result["files"]
    assert entry["status"] == "not_run"
    assert entry["exit_code"] == 4
    assert "usage error" in entry["error"]
    assert result["failed_items"] == 1


INTEGRATION_TREE = {
    "files/app/test_unit.py": "def test_unit():\n    pass\n",
    "files/app/test_api_integration.py": "def test_api():\n    pass\n",
    "files/app/integration/test_db.py": "def test_db():\n    pass\n",
    "files/app/integration/helpers.py": "X = 1\n",
    "files/app/sub/test_other.py": "def test_other():\n    pass\n",
}


async def test_integration_testing_selects_integration_files(
    tmp_path: pathlib.Path, store: Store
) -> None:
    write_tree(tmp_path, INTEGRATION_TREE)
    run = await run_operation(
        "integration_testing", {"path": "app"}, settings=Settings(data_dir=tmp_path), store=store
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    assert sorted(by_file(result)) == ["integration/test_db.py", "test_api_integration.py"]
    assert result["totals"]["passed"] == 2


async def test_integration_testing_by_marker(tmp_path: pathlib.Path, store: Store) -> None:
    write_tree(
        tmp_path,
        {
            "files/app/test_one.py": """
                import pytest

                @pytest.mark.integration
                def test_marked():
                    pass

                def test_plain():
                    pass
            """,
            "files/app/test_two.py": "def test_plain():\n    pass\n",
        },
    )
    run = await run_operation(
        "integration_testing",
        {"path": "app", "marker": "integration"},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.COMPLETED, run.outcome.error
    result = run.outcome.result or {}
    files = by_file(result)
    assert files["test_one.py"]["passed"] == 1
    assert files["test_two.py"]["status"] == "no_tests"  # all deselected: status 5
    assert result["totals"]["passed"] == 1
    assert result["marker"] == "integration"


@pytest.mark.parametrize("marker", ["not", "a b", "x or y", "-k", "", "1abc"])
def test_integration_marker_must_be_a_simple_identifier(marker: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        registry["integration_testing"].parse_params({"path": "app", "marker": marker})
    assert raised.value.details["fields"][0]["field"] == "params.marker"


async def test_a_path_outside_the_root_is_refused(tmp_path: pathlib.Path, store: Store) -> None:
    run = await run_operation(
        "comprehensive_test_suite",
        {"path": "../elsewhere"},
        settings=Settings(data_dir=tmp_path),
        store=store,
    )
    assert run.outcome.status is OperationStatus.FAILED
    assert (run.outcome.error or {})["code"] == "path_outside_root"
