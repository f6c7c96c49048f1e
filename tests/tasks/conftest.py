"""Fixtures of the task drills (tests/tasks/faultstack.py)."""
import pytest

from tests.tasks.faultstack import drill_stack


@pytest.fixture(scope="session")
def fault_stack(stack_env, tmp_path_factory):
    """A drill stack shared by the drills that need no settings of their own."""
    with drill_stack(tmp_path_factory.mktemp("drill-home")) as live:
        yield live


@pytest.fixture(autouse=True)
def _fault_app_is_current(request):
    """The drill stack's app is the current one in the tests that use it."""
    if "fault_stack" in request.fixturenames:
        app = request.getfixturevalue("fault_stack").app
        app.set_current()
        app.set_default()
