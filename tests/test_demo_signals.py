"""The demo as a process: how it answers signals.

Its own module: the demo binds the simulated links' fixed ports of config.yaml,
so it cannot run beside another module's demo.
"""

from __future__ import annotations

import re
import signal

from tests.demo_process import run_demo


def test_demo_stops_on_ctrl_c_with_its_summary() -> None:
    with run_demo(duration=120) as demo:
        assert demo.proc is not None
        demo.proc.send_signal(signal.SIGINT)
        demo.proc.wait(timeout=30)
        printed = demo.output()
        assert demo.proc.returncode == 0, printed
        assert re.search(r"demo stopped: \d+ polls, \d+ failed, \d+ readings", printed), printed
        assert "Traceback" not in printed
