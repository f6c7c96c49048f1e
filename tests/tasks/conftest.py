"""Fixtures of the task drills (tests/tasks/faultstack.py)."""
import pytest

from tests.tasks.faultstack import drill_stack


@pytest.fixture(scope="module")
def fault_stack(stack_env, tmp_path_factory):
    """A drill stack shared by a module's drills that need no settings of their own. Module
    scope: the stack's settings are in os.environ while it runs (worker.app.configure reads
    them), so a session-long drill stack made the session's `live` stack start under the
    drill's DIGITS_HOME."""
    with drill_stack(tmp_path_factory.mktemp("drill-home")) as live:
        yield live


@pytest.fixture(autouse=True)
def _fault_app_is_current(request):
    """The drill stack's app is the current one in the tests that use it."""
    if "fault_stack" in request.fixturenames:
        app = request.getfixturevalue("fault_stack").app
        app.set_current()
        app.set_default()
