"""The worker layer's errors: the embedded stack and the broker, under the project's one root
(model.errors.DigitsError), so the command line reports them in one line like any other."""
from model.errors import DigitsError


class StackError(DigitsError):
    """The embedded Redis/worker/Flower stack cannot be started or reached."""


class BrokerUnreachable(StackError):
    """The broker (Redis) did not answer, for longer than a client waits."""
