"""pytest-only conveniences; the tests themselves are plain unittest classes."""

import os

import pytest

_skipped: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test class that takes seconds says so with a `slow = True` attribute, which unittest
    # ignores; here it becomes the `slow` marker, so that `pytest -m "not slow"` leaves it out.
    for item in items:
        if getattr(item.cls, "slow", False):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI every database and tool is there, so a skipped test is a mistake, not a choice.
    if os.environ.get("CI") == "true" and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} test(s) skipped: " + ", ".join(_skipped[:10]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
