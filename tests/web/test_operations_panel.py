"""The operations panel in a real Chromium: start, follow, cancel and resume an operation."""

from __future__ import annotations

import pytest

from .conftest import Stack, Watched

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CONTRACT_TYPES = {
    "codebase_indexing",
    "code_analysis",
    "dependency_analysis",
    "security_scan",
    "performance_profiling",
    "comprehensive_test_suite",
    "integration_testing",
    "performance_testing",
    "load_testing",
    "kb_population",
    "kb_optimization",
    "vector_indexing",
    "semantic_analysis",
    "backup_operation",
    "migration_operation",
    "cleanup_operation",
    "monitoring_collection",
}


def operation(page, operation_id: str):
    return page.locator(f'[data-testid="operation"][data-id="{operation_id}"]')


def test_an_indexing_operation_runs_to_100_percent(stack: Stack, watched: Watched) -> None:
    project = stack.server.data_dir / "files" / "web-project"
    (project / "pkg").mkdir(parents=True)
    for index in range(12):
        (project / "pkg" / f"module_{index}.py").write_text(
            f"def f{index}():\n    return {index}\n"
        )
    (project / "README.md").write_text("# Project\n\nSome text.\n")
    page = watched.page
    page.goto(stack.url)

    select = page.get_by_test_id("operation-type")
    select.locator("option").first.wait_for(state="attached")
    listed = set(select.locator("option").all_inner_texts())
    assert listed >= CONTRACT_TYPES
    select.select_option("codebase_indexing")
    page.get_by_test_id("operation-path").fill("web-project")
    page.get_by_test_id("operation-start").click()

    card = page.locator('[data-testid="operation"]').first
    card.wait_for()
    page.wait_for_selector('[data-testid="operation"][data-status="completed"]')
    assert card.locator("progress").evaluate("bar => [bar.value, bar.max]") == [100, 100]
    assert "13/13 items" in card.inner_text()
    with stack.server.client() as client:
        record = client.get(f"/api/operations/{card.get_attribute('data-id')}").json()
    assert record["status"] == "completed"
    assert record["type"] == "codebase_indexing"


def test_an_operation_is_followed_cancelled_and_resumed(stack: Stack, watched: Watched) -> None:
    with stack.server.client() as client:
        started = client.post(
            "/api/operations",
            json={"type": "monitoring_collection", "params": {"samples": 16, "interval_s": 0.2}},
        )
        assert started.status_code == 202
    operation_id = started.json()["operation_id"]
    page = watched.page
    page.goto(stack.url)

    card = operation(page, operation_id)
    card.and_(page.locator('[data-status="running"]')).wait_for()
    # Once items were done, the rate and the estimated completion show.
    rate = card.get_by_test_id("operation-rate")
    page.wait_for_function(
        "node => node.textContent.includes('items/s') && node.textContent.includes('done at')",
        arg=rate.element_handle(),
    )
    running_value = card.locator("progress").evaluate("bar => bar.value")
    assert 0 < running_value < 100

    card.get_by_test_id("operation-cancel").click()
    card.and_(page.locator('[data-status="cancelled"]')).wait_for()
    assert card.get_by_test_id("operation-cancel").is_hidden()
    card.get_by_test_id("operation-resume").click()
    card.and_(page.locator('[data-status="completed"]')).wait_for(timeout=15_000)
    assert card.locator("progress").evaluate("bar => bar.value") == 100
    assert card.get_by_test_id("operation-resume").is_hidden()
    with stack.server.client() as client:
        record = client.get(f"/api/operations/{operation_id}").json()
    assert record["status"] == "completed"
    assert record["attempts"] == 2
