"""The CLIFER lifecycle node: camera frames in, stamped expression estimates out.

configure loads the models (slow, may fail cleanly); activate subscribes and
starts the worker; deactivate stops both. The image callback only stores the
newest frame; a worker thread runs :class:`clifer_core.pipeline.FramePipeline`
on it as soon as it is free, so a slow frame never queues a backlog: frames
replaced before processing are counted as dropped.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from clifer.msg import ExpressionEstimateArray
from clifer_ros.conversions import ImageConversionError, compressed_to_rgb, estimates_to_array_msg, image_to_rgb
from clifer_ros.parameters import BY_NAME, PARAMETERS

NODE_NAME = "clifer"
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)


class FrameStats:
    """Counters and timings reported on /diagnostics (updated by callback and worker threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.rejected = 0
        self.failed = 0
        self.faces = 0
        self.last_processing_ms = 0.0
        self.processing_ms: list[float] = []

    def add_processing(self, milliseconds: float, faces: int) -> None:
        with self.lock:
            self.processed += 1
            self.faces = faces
            self.last_processing_ms = milliseconds
            self.processing_ms.append(milliseconds)
            del self.processing_ms[:-100]

    def median_processing_ms(self) -> float:
        with self.lock:
            values = sorted(self.processing_ms)
        return values[len(values) // 2] if values else 0.0


class CliferNode(LifecycleNode):
    """Publishes ``clifer/ExpressionEstimateArray`` on ``~/expressions`` for every processed frame."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.pipeline = None
        self.stats = FrameStats()
        self._newest = None
        self._frame_ready = threading.Condition()
        self._running = False
        self._worker: threading.Thread | None = None
        self._subscription = None
        self._diagnostics_timer = None
        self._expressions_pub = None
        self._diagnostics_pub = None
        self._state = "unconfigured"

    def param(self, name: str):
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = BY_NAME.get(parameter.name)
            if spec is None:
                continue
            reason = spec.validate(parameter.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == "min_face_score" and self.pipeline is not None:
                self.pipeline.set_min_face_score(parameter.value)

    # Lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from clifer_core.pipeline import FramePipeline, PipelineConfig

        config = PipelineConfig(
            detector=self.param("detector"),
            min_face_score=self.param("min_face_score"),
            track_min_hits=self.param("track_min_hits"),
            track_max_misses=self.param("track_max_misses"),
            deterministic_ids=self.param("deterministic_ids"),
            crop_size=self.param("crop_size"),
            crop_margin=self.param("crop_margin"),
        )
        try:
            self.pipeline = FramePipeline(config)
            self.pipeline.warm_up()
        except (OSError, ValueError, ImportError) as error:
            self.get_logger().error(f"cannot load the models: {error}")
            return TransitionCallbackReturn.FAILURE
        self._expressions_pub = self.create_lifecycle_publisher(ExpressionEstimateArray, "~/expressions", RESULTS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            self.param("diagnostics_period_s"), self._publish_diagnostics, MutuallyExclusiveCallbackGroup()
        )
        self._state = "inactive"
        self.get_logger().info(f"configured: detector {config.detector}, expression model FER2013 (prior)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.param("image_transport") == "compressed":
            self._subscription = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, IMAGE_QOS, callback_group=MutuallyExclusiveCallbackGroup()
            )
        else:
            self._subscription = self.create_subscription(
                Image, "image", self._on_image, IMAGE_QOS, callback_group=MutuallyExclusiveCallbackGroup()
            )
        self._running = True
        self._worker = threading.Thread(target=self._process_frames, name="clifer-frames", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(f"active: listening on {self._subscription.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        for publisher in (self._expressions_pub, self._diagnostics_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._expressions_pub = self._diagnostics_pub = None
        self.pipeline = None

    # Frame path

    def _on_image(self, msg) -> None:
        with self._frame_ready:
            self.stats.received += 1
            if self._newest is not None:
                self.stats.dropped += 1
            self._newest = msg
            self._frame_ready.notify()

    def _process_frames(self) -> None:
        next_allowed = 0.0
        while True:
            with self._frame_ready:
                while self._running and self._newest is None:
                    self._frame_ready.wait(timeout=0.5)
                if not self._running:
                    return
            delay = next_allowed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._frame_ready:
                msg, self._newest = self._newest, None
            if msg is None:
                continue
            next_allowed = time.monotonic() + 1.0 / self.param("processing_rate_hz")
            try:
                self._process(msg)
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the camera stream
                with self.stats.lock:
                    self.stats.failed += 1
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}", throttle_duration_sec=5.0)

    def _process(self, msg) -> None:
        start = time.perf_counter()
        try:
            frame = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ImageConversionError as error:
            with self.stats.lock:
                self.stats.rejected += 1
            self.get_logger().warning(f"frame skipped: {error}", throttle_duration_sec=5.0)
            return
        pipeline = self.pipeline
        if pipeline is None:
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        estimates = pipeline.process(frame, stamp=stamp)
        publisher = self._expressions_pub
        if publisher is not None:
            publisher.publish(estimates_to_array_msg(estimates, msg.header))
        self.stats.add_processing((time.perf_counter() - start) * 1e3, len(estimates))

    def _stop_worker(self) -> None:
        with self._frame_ready:
            self._running = False
            self._newest = None
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    # Diagnostics

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        median_ms = self.stats.median_processing_ms()
        with self.stats.lock:
            values = {
                "lifecycle state": self._state,
                "frames received": self.stats.received,
                "frames processed": self.stats.processed,
                "frames dropped": self.stats.dropped,
                "frames rejected": self.stats.rejected,
                "frames failed": self.stats.failed,
                "faces in last frame": self.stats.faces,
                "last processing ms": f"{self.stats.last_processing_ms:.1f}",
                "median processing ms": f"{median_ms:.1f}",
                "expression model": "FER2013 mini-Xception (prior)",
                "detector": self.param("detector"),
            }
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: expression pipeline", hardware_id="clifer")
        if self._state != "active":
            status.level, status.message = DiagnosticStatus.OK, f"{self._state}"
        elif self.stats.failed:
            status.level, status.message = DiagnosticStatus.ERROR, f"{self.stats.failed} frames failed (see log)"
        elif median_ms > self.param("max_processing_ms"):
            status.level, status.message = DiagnosticStatus.WARN, f"slow: median {median_ms:.0f} ms per frame"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``clifer_node --ros-args ...``; stays unconfigured unless ``autostart`` is given."""
    argv = sys.argv if argv is None else argv
    rclpy.init(args=argv)
    non_ros = rclpy.utilities.remove_ros_args(argv)
    autostart = "--autostart" in non_ros[1:]
    node = CliferNode()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed")
                return 1
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
