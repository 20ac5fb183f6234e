"""An aiosmtpd sink in its own process: accepts every message and throws it away.

    python -m benchmarks.sink --port 2525      # prints "ready <port>" once it accepts connections

The benchmark starts it as a subprocess so that the sink's CPU is not the sender's: on two cores
the sender (mailflow or raw aiosmtplib) has one core, the sink the other.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller


class Discard:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 OK discarded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    controller = Controller(Discard(), hostname="127.0.0.1", port=args.port, data_size_limit=50 * 1024 * 1024)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready {args.port}", flush=True)
    stop.wait()
    controller.stop()
    return 0


class SinkProcess:
    """Start/stop the sink subprocess (context manager)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SinkProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sink", "--port", str(self.port)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"the SMTP sink did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
