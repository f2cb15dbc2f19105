"""Drive a clifer node from outside, over real DDS: for integration tests, benchmarks and bag replay.

:class:`NodeProcess` runs ``clifer_node`` in its own process; :class:`Probe` is an
rclpy node spinning in a background thread that publishes frames, collects
outputs and calls lifecycle and parameter services.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data

from clifer_ros.conversions import rgb_to_image

VENV_BIN = Path(sys.executable).parent
PACKAGE = "clifer"
EXECUTABLE = "clifer_node"


def node_executable() -> Path:
    """``clifer_node`` as ``ros2 run`` finds it (``lib/clifer/`` under an ``AMENT_PREFIX_PATH`` prefix), else on
    ``PATH``, else beside this interpreter (the virtual environment's console script)."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / "lib" / PACKAGE / EXECUTABLE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which(EXECUTABLE)
    return Path(on_path) if on_path else VENV_BIN / EXECUTABLE


class NodeProcess:
    """``clifer_node`` (see :func:`node_executable`) started with ``argv`` in its own process."""

    def __init__(self, argv: list[str]):
        log_dir = os.environ.get("ROS_LOG_DIR") or tempfile.gettempdir()
        self.log = tempfile.NamedTemporaryFile(prefix="clifer-node-", suffix=".log", dir=log_dir, delete=False)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())

    @classmethod
    def start(cls, *ros_args: str, extra: tuple[str, ...] = ()) -> "NodeProcess":
        return cls([str(node_executable()), *extra, "--ros-args", *ros_args])

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def bring_up(self, probe: "Probe", node_name: str, *transitions: int, timeout: float = 60.0) -> "NodeProcess":
        """Apply lifecycle ``transitions`` in order; if one is refused or times out, stop the node before raising,
        so a failed start never leaves a node behind to answer the next test's calls under the same name."""
        try:
            for transition in transitions:
                assert probe.transition(node_name, transition, timeout), self.output()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0, signum: int = signal.SIGINT) -> int:
        """SIGINT, as Ctrl-C or `ros2 launch` would (or ``signum``: SIGTERM as a process manager would); returns
        the exit code, after SIGKILL if the node did not end within ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


TRANSITION_TARGETS = {
    Transition.TRANSITION_CONFIGURE: "inactive",
    Transition.TRANSITION_ACTIVATE: "active",
    Transition.TRANSITION_DEACTIVATE: "inactive",
    Transition.TRANSITION_CLEANUP: "unconfigured",
}
"""The state each transition ends in, to tell a lost reply from a refused transition."""


PARAMETER_RESEND_S = 5.0
"""Seconds without a reply after which a parameter call (idempotent) is sent again (:meth:`Probe.call`)."""


class Probe:
    """A test-side rclpy node spinning in a background thread."""

    def __init__(self, name: str = "clifer_test_probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._publishers = {}
        self._clients = {}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)

    def wait_for(self, predicate, timeout: float, message: str, detail=None) -> None:
        """Poll ``predicate`` until true; on time-out fail with ``message`` and, when given, ``detail()``
        (what was seen instead), so an intermittent failure says why."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        seen = f"\n{detail()}" if detail is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {message}{seen}")

    def call(self, service_type, name: str, request, timeout: float = 30.0, resend_after: float | None = None):
        """Call a service and return its reply.

        One client per service, kept: a fresh client's first reply can be lost when the server has not
        yet matched the client's reply reader (wait_for_service only sees the request side), which a
        loaded machine makes likely. A fresh server (a node just started) loses replies the same way;
        for an idempotent service (getting or setting parameters) ``resend_after`` seconds without a
        reply sends the request again, until ``timeout``; the first reply to any of the copies is returned.
        """
        client = self._clients.get((service_type, name))
        if client is None:
            client = self._clients[(service_type, name)] = self.node.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {name} did not appear within {timeout} s")
        deadline = time.monotonic() + timeout
        futures = []
        while True:
            futures.append(client.call_async(request))
            attempt = min(resend_after or timeout, max(deadline - time.monotonic(), 0.0))
            try:
                self.wait_for(lambda: any(f.done() for f in futures), attempt, f"a reply from {name}")
            except AssertionError:
                if time.monotonic() < deadline:
                    continue
                for future in futures:
                    client.remove_pending_request(future)
                raise AssertionError(f"timed out after {timeout} s waiting for a reply from {name}") from None
            replied = next(f for f in futures if f.done())
            for future in futures:
                if not future.done():
                    client.remove_pending_request(future)
            return replied.result()

    def transition(self, node_name: str, transition_id: int, timeout: float = 60.0) -> bool:
        """Ask for a lifecycle transition; a lost reply is told from a refused transition by the state reached."""
        request = ChangeState.Request()
        request.transition.id = transition_id
        try:
            return self.call(ChangeState, f"{node_name}/change_state", request, timeout).success
        except AssertionError:
            if self.state(node_name) == TRANSITION_TARGETS.get(transition_id):
                return True
            raise

    def state(self, node_name: str) -> str:
        return self.call(GetState, f"{node_name}/get_state", GetState.Request()).current_state.label

    def collect(self, msg_type, topic: str, qos=10) -> list:
        received = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def advertise(self, msg_type, topic: str, wait_for_subscriber: bool = True, timeout: float = 20.0) -> None:
        """Create a best-effort publisher on ``topic`` and (by default) wait until a subscriber matches it."""
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type, topic, qos_profile_sensor_data)
        if wait_for_subscriber:
            self.wait_for(lambda: self._publishers[topic].get_subscription_count() > 0, timeout, f"a subscriber on {topic}")

    def publish_frame(self, topic: str, frame_rgb, stamp_ns: int, encoding: str = "bgr8", frame_id: str = "camera"):
        from sensor_msgs.msg import Image

        self.advertise(Image, topic)
        msg = rgb_to_image(frame_rgb, encoding)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = frame_id
        self._publishers[topic].publish(msg)
        return msg

    def publish_message(self, topic: str, msg, wait_for_subscriber: bool = True) -> None:
        self.advertise(type(msg), topic, wait_for_subscriber)
        self._publishers[topic].publish(msg)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
