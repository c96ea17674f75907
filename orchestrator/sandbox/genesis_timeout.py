"""pytest plugin: a hanging test fails alone, instead of voiding the verdict.

Installed in toolchain images as ``/opt/genesis/audit/genesis_timeout.py``
and loaded by the runner through ``PYTEST_PLUGINS`` (installed plugins do
not autoload in a sandbox). Each test's setup, call and teardown together
get ``GENESIS_TEST_TIMEOUT_S`` seconds (the repository's
``test_timeout_s``); past it, SIGALRM fails that test with a message that
says so, and the run goes on to the next test. The sandbox's own deadline
(``timeout_ms``) still bounds the whole run. A test that blocks signals
(a C extension that never returns to Python) is not interrupted: the
deadline catches it.
"""

import os
import signal

import pytest


def _seconds():
    try:
        return float(os.environ.get("GENESIS_TEST_TIMEOUT_S") or 0)
    except ValueError:
        return 0.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    seconds = _seconds()
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        pytest.fail("Timeout: the test ran past %g s (the repository's test_timeout_s)" % seconds, pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
