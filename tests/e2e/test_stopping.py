"""Ctrl-C in the terminal of `make run`: everything stops, quietly, as a stop and not as a crash."""

import os
import signal


def test_ctrl_c_stops_every_service_without_a_traceback(suite):
    suite.start()
    # A terminal's Ctrl-C goes to the whole foreground process group, not only the supervisor.
    os.killpg(os.getpgid(suite.process.pid), signal.SIGINT)
    assert suite.process.wait(timeout=60) == 0
    said = suite.log.read_text()
    assert "stopped." in said
    assert "Traceback" not in said and "CancelledError" not in said, said[-3000:]
