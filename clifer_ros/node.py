"""The CLIFER lifecycle node: camera frames in, stamped per-person expression estimates out.

configure loads the models and the saved memories (slow; fails cleanly);
activate subscribes and starts the frame worker; deactivate stops it; cleanup
and shutdown save. With ``input: ros4hri`` the faces come from a ROS4HRI stack
instead of a camera (:mod:`clifer_ros.ros4hri`: each tracked face's aligned
crop and the person manager's association). The image callback only stores the newest frame; a worker
thread runs :class:`clifer_core.pipeline.FramePipeline` on it as soon as it is
free, so a slow frame never queues a backlog (frames replaced before
processing are counted as dropped). Everything the node learns is decided by
one :class:`clifer_core.session.LearningSession` (the one ``clifer bag eval``
drives too): the node only turns ROS requests and messages into session calls
and session state into /diagnostics. Learning runs on the session's worker
thread and never blocks inference. What the node keeps about people is
declared on /data_management (:mod:`clifer_ros.privacy`); people not seen for
``retention_days`` are forgotten at configure and daily.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from clifer.msg import ExpressionEstimateArray, ExpressionLabel
from clifer.srv import ForgetPerson, ListPeople, SplitPerson, Teach
from clifer_core.learning import describe_error
from clifer_core.privacy import SECONDS_PER_DAY, protect
from clifer_core.session import Label, LearningSession, SessionSettings
from clifer_ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    estimates_to_array_msg,
    image_to_rgb,
    rgb_to_image,
)
from clifer_ros.parameters import BY_NAME, PARAMETERS
from clifer_ros.privacy import DataManagement

try:
    from hri_msgs.msg import Expression as HriExpression
except ImportError:
    HriExpression = None

NODE_NAME = "clifer"
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
LABELS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
"""Deep enough that a burst of labels waits in DDS instead of being overwritten before the node takes it."""
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
AUTOSAVE_TICK_S = 1.0
"""How often the autosave timer looks whether a save (or a retry after a failed one) is due."""
SHUTDOWN_GRACE_S = 5.0
"""Seconds the executor's callbacks get to finish at shutdown."""
SHUTDOWN_DEADLINE_S = 9.0
"""Seconds the final save and the rest of shutdown may take, once the frame worker has stopped, before the process
ends anyway."""
SIGNAL_POLL_S = 0.5
"""How often the main thread wakes while the executor spins, so a signal's Python handler runs promptly."""
RETENTION_CHECK_PERIOD_S = SECONDS_PER_DAY
"""How often people not seen for ``retention_days`` are looked for while the node runs (also at configure and
whenever ``retention_days`` is set)."""
RETENTION_WAIT_S = 60.0
"""How long configure waits for the erasures retention queued, so a configured node holds no one it should not."""
SESSION_SETTINGS = ("teach_samples", "seed_faces", "self_training", "self_training_threshold", "self_training_frames")


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
        self.processing_ms: deque[float] = deque(maxlen=100)

    def add_processing(self, milliseconds: float, faces: int, frames: int = 1) -> None:
        with self.lock:
            self.processed += frames
            self.faces = faces
            self.last_processing_ms = milliseconds
            self.processing_ms.append(milliseconds)

    def median_processing_ms(self) -> float:
        with self.lock:
            values = sorted(self.processing_ms)
        return values[len(values) // 2] if values else 0.0


def stamp_seconds(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class CliferNode(LifecycleNode):
    """Publishes ``clifer/ExpressionEstimateArray`` on ``~/expressions`` for every processed frame."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.pipeline = None
        self.learner = None
        self.session: LearningSession | None = None
        self.stats = FrameStats()
        self.set_aside: dict[str, str] = {}
        self._newest = None
        self._ros4hri = None
        self._frame_ready = threading.Condition()
        self._running = False
        self._worker: threading.Thread | None = None
        self._inputs = []
        self._housekeeping = []
        self._memory_services = []
        self._expressions_pub = None
        self._debug_pub = None
        self._diagnostics_pub = None
        self._diagnostics_timer = None
        self._face_publishers: dict[str, object] = {}
        self._data_management = DataManagement(self)
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
            elif (parameter.name == "identity_threshold" and parameter.value > 0 and self.pipeline is not None
                  and self.pipeline.identity):
                self.pipeline.identity.gallery.threshold = float(parameter.value)
            elif parameter.name == "auto_enrol" and self.pipeline is not None and self.pipeline.identity:
                self.pipeline.identity.gallery.auto_enrol = bool(parameter.value)
            elif parameter.name == "learning_enabled" and self.session is not None:
                self.session.learning_enabled = parameter.value
            elif parameter.name in SESSION_SETTINGS and self.session is not None:
                setattr(self.session.settings, parameter.name, parameter.value)
            elif parameter.name == "diagnostics_period_s" and self._diagnostics_timer is not None:
                self._start_diagnostics_timer(parameter.value)
            elif parameter.name == "retention_days" and self.session is not None:
                self._declare_personal_data()
                self._check_retention()

    # ------------------------------------------------------------ lifecycle

    @property
    def memory_dir(self) -> Path | None:
        """``memory_dir`` with ``$ROS_HOME`` (default ``~/.ros``) and ``~`` expanded; None keeps memories in RAM."""
        folder = self.param("memory_dir")
        if not folder:
            return None
        folder = folder.replace("$ROS_HOME", os.environ.get("ROS_HOME") or "~/.ros")
        return Path(os.path.expandvars(folder)).expanduser()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.param("input") == "ros4hri" and HriExpression is None:
            self.get_logger().error("input ros4hri needs ROS4HRI's hri_msgs: install ros-$ROS_DISTRO-hri-msgs")
            return TransitionCallbackReturn.FAILURE
        try:
            self._build_models()
        except (OSError, ValueError, ImportError) as error:
            self.get_logger().error(f"cannot load the models: {error}")
            self.pipeline = self.learner = None
            return TransitionCallbackReturn.FAILURE
        self.session = LearningSession(self.pipeline, self.memory_dir, self.get_logger(), SessionSettings(
            **{name: self.param(name) for name in SESSION_SETTINGS}))
        self.session.learning_enabled = self.param("learning_enabled")
        for path, problem in self.session.restore_last_seen().items():
            self._record_set_aside(path, problem)
        self._forget_expired_at_start()
        self._expressions_pub = self.create_lifecycle_publisher(ExpressionEstimateArray, "~/expressions", RESULTS_QOS)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", RESULTS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        services = ReentrantCallbackGroup()
        self._memory_services = [
            self.create_service(srv_type, name, self._never_raising(callback), callback_group=services)
            for srv_type, name, callback in (
                (Teach, "~/teach", self._on_teach), (ForgetPerson, "~/forget_person", self._on_forget_person),
                (ListPeople, "~/list_people", self._on_list_people), (Trigger, "~/save", self._on_save),
                (Trigger, "~/load", self._on_load), (Trigger, "~/reset", self._on_reset),
                (Trigger, "~/forget_all", self._on_forget_all),
                (SplitPerson, "~/split_person", self._on_split_person))
        ]
        self._housekeeping_group = MutuallyExclusiveCallbackGroup()
        self._housekeeping = [
            self.create_timer(AUTOSAVE_TICK_S, self._autosave, self._housekeeping_group),
            self.create_timer(RETENTION_CHECK_PERIOD_S, self._check_retention, self._housekeeping_group)]
        self._declare_personal_data()
        self._start_diagnostics_timer(self.param("diagnostics_period_s"))
        self._state = "inactive"
        self.get_logger().info(
            f"configured: detector {self.param('detector')}, features {self.learner.features_name}, "
            f"imagination {self.learner.imagination}, {len(self.learner.people())} people known, "
            f"memories in {self.memory_dir or 'RAM only'}")
        return TransitionCallbackReturn.SUCCESS

    def _build_models(self) -> None:
        from clifer_core.build import build_pipeline
        from clifer_core.pipeline import PipelineConfig

        config = PipelineConfig(
            detector=self.param("detector"), min_face_score=self.param("min_face_score"),
            track_min_hits=self.param("track_min_hits"), track_max_misses=self.param("track_max_misses"),
            deterministic_ids=self.param("deterministic_ids"), crop_size=self.param("crop_size"),
            crop_margin=self.param("crop_margin"), identity=self.param("identity"),
            recent_crops=max(self.param("seed_faces"), self.param("teach_samples")),
        )
        pipeline = build_pipeline(
            config, features=self.param("features"), imagination=self.param("imagination"),
            imagination_model=self.param("imagination_model") or None,
            population_model=self.param("population_model"), adaptation=self.param("person_adaptation"),
            identity_config=self.param("identity_config"), identity_threshold=self.param("identity_threshold"),
            auto_enrol=self.param("auto_enrol"), warn=self.get_logger().warning)
        try:
            if self.memory_dir is not None:
                self._protect_memory_dir()
                for path, problem in LearningSession.restore(pipeline, self.memory_dir).items():
                    self._record_set_aside(path, problem)
            pipeline.warm_up()
            pipeline.learner.warm_up(config.crop_size)
        except BaseException:
            pipeline.close()
            raise
        self.learner, self.pipeline = pipeline.learner, pipeline

    def _protect_memory_dir(self) -> None:
        """Make memory_dir owner-only (0700, its files 0600), creating it; a failure is a warning, not a refusal."""
        try:
            protect(self.memory_dir)
        except OSError as error:
            self.get_logger().warning(f"cannot make {self.memory_dir} owner-only: {describe_error(error)}")

    def _start_diagnostics_timer(self, period_s: float) -> None:
        """(Re)create the /diagnostics timer, so a new diagnostics_period_s applies at once."""
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(period_s, self._publish_diagnostics, self._housekeeping_group)

    def _never_raising(self, callback):
        """A service callback that answers ``success=false`` with the reason instead of raising into the executor."""
        def guarded(request, response):
            try:
                return callback(request, response)
            except Exception as error:  # noqa: BLE001 - a request must never take the node down
                self.get_logger().error(f"{callback.__name__} failed: {describe_error(error)}", throttle_duration_sec=5.0)
                if hasattr(response, "success"):
                    response.success, response.message = False, f"internal error: {describe_error(error)}"
                return response
        return guarded

    def _record_set_aside(self, path: str, problem: str) -> None:
        self.set_aside[path] = problem
        self.get_logger().error(f"set aside {path} (renamed *.corrupt): {problem}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        labels = self.create_subscription(ExpressionLabel, "labels", self._on_label, LABELS_QOS,
                                          callback_group=MutuallyExclusiveCallbackGroup())
        self._inputs = [labels]
        if self.param("input") == "ros4hri":
            from clifer_ros.ros4hri import Ros4hriInput

            self._ros4hri = Ros4hriInput(self, self._frame_ready, self.stats)
            source = f"ROS4HRI faces on {', '.join(self._ros4hri.topics)}"
        else:
            frames = MutuallyExclusiveCallbackGroup()
            if self.param("image_transport") == "compressed":
                image = self.create_subscription(CompressedImage, "image/compressed", self._on_image, IMAGE_QOS,
                                                 callback_group=frames)
            else:
                image = self.create_subscription(Image, "image", self._on_image, IMAGE_QOS, callback_group=frames)
            self._inputs.append(image)
            source = f"images on {image.topic_name}"
        self._running = True
        self._worker = threading.Thread(target=self._process_frames, name="clifer-frames", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(f"active: {source}, labels on {labels.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        self._close_ros4hri()
        self._state = "inactive"
        return super().on_deactivate(state)

    def _close_ros4hri(self) -> None:
        """Drop the ROS4HRI subscriptions, and with them every face and its expression topic."""
        if self._ros4hri is None:
            return
        self._ros4hri.close()
        self._ros4hri = None
        for face_id in list(self._face_publishers):
            self.destroy_publisher(self._face_publishers.pop(face_id))
        if self.pipeline is not None:
            self.pipeline.end_faces()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        self._data_management.close()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Finish and save learning, then drop timers, services and publishers, and close the models (threads)."""
        self._close_ros4hri()
        if self.session is not None:
            self.session.stop()
            self._save_all()
            self.session = None
        for timer in [*self._housekeeping, self._diagnostics_timer]:
            if timer is not None:
                self.destroy_timer(timer)
        self._diagnostics_timer = None
        for service in self._memory_services:
            self.destroy_service(service)
        for publisher in (self._expressions_pub, self._debug_pub, self._diagnostics_pub, *self._face_publishers.values()):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._face_publishers = {}
        self._housekeeping, self._memory_services = [], []
        self._expressions_pub = self._debug_pub = self._diagnostics_pub = None
        if self.pipeline is not None:
            self.pipeline.close()
        self.pipeline = self.learner = None

    # ----------------------------------------------------------- frame path

    def _on_image(self, msg) -> None:
        with self._frame_ready:
            self.stats.received += 1
            if self._newest is not None:
                self.stats.dropped += 1
            self._newest = msg
            self._frame_ready.notify()

    def _input_waiting(self) -> bool:
        return self._newest is not None or (self._ros4hri is not None and self._ros4hri.pending())

    def _take_input(self):
        """The newest camera frame, or (ros4hri) the newest crop of each face and the faces that left."""
        if self._ros4hri is not None:
            return self._ros4hri.take()
        msg, self._newest = self._newest, None
        return msg

    def _process_frames(self) -> None:
        next_allowed = 0.0
        while True:
            with self._frame_ready:
                while self._running and not self._input_waiting():
                    self._frame_ready.wait(timeout=self._ros4hri.wait_s() if self._ros4hri is not None else 0.5)
                if not self._running:
                    return
            delay = next_allowed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._frame_ready:
                work = self._take_input()
            if not work:
                continue
            next_allowed = time.monotonic() + 1.0 / self.param("processing_rate_hz")
            try:
                if self._ros4hri is not None:
                    self._process_faces(work)
                else:
                    self._process(work)
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the camera stream
                with self.stats.lock:
                    self.stats.failed += 1
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}", throttle_duration_sec=5.0)

    def _process(self, msg) -> None:
        start = time.perf_counter()
        try:
            limit = self.param("max_image_pixels")
            frame = compressed_to_rgb(msg, limit) if isinstance(msg, CompressedImage) else image_to_rgb(msg, limit)
        except ImageConversionError as error:
            with self.stats.lock:
                self.stats.rejected += 1
            self.get_logger().warning(f"frame skipped: {error}", throttle_duration_sec=5.0)
            return
        pipeline = self.pipeline
        if pipeline is None:
            return
        estimates = pipeline.process(frame, stamp=stamp_seconds(msg.header))
        publisher = self._expressions_pub
        if publisher is not None:
            publisher.publish(estimates_to_array_msg(estimates, msg.header))
        self.stats.add_processing((time.perf_counter() - start) * 1e3, len(estimates))
        if self._debug_pub is not None and self._debug_pub.get_subscription_count() > 0:
            self._debug_pub.publish(rgb_to_image(draw_estimates(frame, estimates), "bgr8", msg.header))
        if HriExpression is not None and self.param("rep155_expressions"):
            self._publish_rep155(estimates, msg.header, {track.face_id for track in pipeline.tracker.tracks})
        session = self.session
        if session is not None:
            session.after_frame(estimates)

    def _process_faces(self, work) -> None:
        """ROS4HRI input: forget faces that left, apply the person manager's associations, then estimate the crops
        (grouped by their image's stamp: one ~/expressions array per camera frame of the face detector)."""
        pipeline, session, ros4hri = self.pipeline, self.session, self._ros4hri
        if pipeline is None or ros4hri is None:
            return
        if work.left:
            pipeline.end_faces(work.left)
            for face_id in work.left:
                if face_id in self._face_publishers:
                    self.destroy_publisher(self._face_publishers.pop(face_id))
        bound, released = ros4hri.association.changes()
        for face_id in released:
            pipeline.restart_identity(face_id)
        for face_id, person_id in bound.items():
            if session is not None:
                session.bind(face_id, person_id)
        people = ros4hri.association.people()
        by_stamp: dict[tuple[int, int], dict] = {}
        for face_id, msg in work.crops.items():
            by_stamp.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), {})[face_id] = msg
        for key in sorted(by_stamp):
            self._process_crops(pipeline, by_stamp[key], people, ros4hri)

    def _process_crops(self, pipeline, messages: dict, people: dict, ros4hri) -> None:
        start = time.perf_counter()
        crops = {}
        for face_id, msg in messages.items():
            try:
                crops[face_id] = image_to_rgb(msg, self.param("max_image_pixels"))
            except ImageConversionError as error:
                with self.stats.lock:
                    self.stats.rejected += 1
                self.get_logger().warning(f"crop of face {face_id} skipped: {error}", throttle_duration_sec=5.0)
        if not crops:
            return
        header = next(iter(messages.values())).header
        estimates = pipeline.process_crops(crops, stamp=stamp_seconds(header), people=people)
        if self._expressions_pub is not None:
            self._expressions_pub.publish(estimates_to_array_msg(estimates, header))
        self.stats.add_processing((time.perf_counter() - start) * 1e3, len(estimates), frames=len(crops))
        if HriExpression is not None and self.param("rep155_expressions"):
            self._publish_rep155(estimates, header, ros4hri.tracked())
        if self.session is not None:
            self.session.after_frame(estimates)

    def _publish_rep155(self, estimates, header, live_faces: set[str]) -> None:
        """One hri_msgs/Expression per live face on /humans/faces/<id>/expression; a publisher lives as long as its face."""
        for estimate in estimates:
            if estimate.face_id not in live_faces:
                continue
            publisher = self._face_publishers.get(estimate.face_id)
            if publisher is None:
                publisher = self.create_publisher(HriExpression, f"/humans/faces/{estimate.face_id}/expression",
                                                  RESULTS_QOS)
                self._face_publishers[estimate.face_id] = publisher
            publisher.publish(HriExpression(header=header, expression=estimate.label, valence=float(estimate.valence),
                                            arousal=float(estimate.arousal), confidence=estimate.confidence))
        for face_id in [face_id for face_id in self._face_publishers if face_id not in live_faces]:
            self.destroy_publisher(self._face_publishers.pop(face_id))

    # ------------------------------------------------------------- teachers

    def _on_label(self, msg: ExpressionLabel) -> None:
        """Hand a label to the session, which keeps it until its frame is processed and counts it."""
        session = self.session
        if session is not None:
            session.receive_label(Label(stamp=stamp_seconds(msg.header), expression=msg.expression,
                                        face_id=msg.face_id, person_id=msg.person_id))

    def _on_teach(self, request: Teach.Request, response: Teach.Response) -> Teach.Response:
        outcome = self._answer(response, lambda session: session.teach(
            request.expression, face_id=request.face_id, person_id=request.person_id))
        if outcome is not None and outcome.person_id:
            response.person_id = outcome.person_id
        return response

    # ------------------------------------------------------ memory services

    def _save_all(self) -> None:
        """Save everything (shutdown, cleanup); a failure is logged and on /diagnostics, never raised."""
        if self.session is None:
            return
        try:
            self.session.save(everything=True)
        except Exception as error:  # noqa: BLE001 - recorded by the worker; the node must still shut down cleanly
            self.get_logger().error(f"final save failed, learning since the last save is lost: {describe_error(error)}")

    def _autosave(self) -> None:
        if self.session is not None:
            self.session.autosave(self.param("autosave_period_s"))

    def _on_save(self, request, response):
        if self.session is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        try:
            saved = self.session.save(everything=True)
        except Exception as error:  # noqa: BLE001 - the reply says why; learning stays in RAM and autosave retries
            response.success = False
            response.message = f"saving failed: {describe_error(error)}; learning is kept in RAM and saved when possible"
            return response
        response.success, response.message = True, f"saved {len(saved)} people to {self.memory_dir}"
        return response

    def _on_load(self, request, response):
        if self.session is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        problems = self.session.load()
        for path, problem in problems.items():
            self._record_set_aside(path, problem)
        response.success = True
        response.message = (f"loaded {len(self.learner.people())} people"
                            + (f"; set aside {len(problems)} files" if problems else ""))
        return response

    def _answer(self, response, act):
        """Fill ``response`` from the Outcome of ``act(session)`` and return it; None (refused) before configure."""
        if self.session is None:
            response.success, response.message = False, "node is not configured"
            return None
        outcome = act(self.session)
        response.success, response.message = outcome.success, outcome.message
        return outcome

    def _on_reset(self, request, response):
        self._answer(response, lambda session: session.reset())
        return response

    def _on_forget_person(self, request: ForgetPerson.Request, response: ForgetPerson.Response):
        """Queue the erasure on the learning worker: it runs after the jobs already queued, off the executor."""
        self._answer(response, lambda session: session.forget(request.person_id))
        return response

    def _on_split_person(self, request: SplitPerson.Request, response: SplitPerson.Response):
        """Undo the last merge into a person in the gallery at once; the learning worker saves it."""
        outcome = self._answer(response, lambda session: session.split(request.person_id))
        response.new_person_id = outcome.person_id if outcome is not None and outcome.success else ""
        return response

    def _on_forget_all(self, request, response):
        """Queue the erasure of everyone on the learning worker (after the jobs already queued), off the executor."""
        self._answer(response, lambda session: session.forget_all())
        return response

    # ------------------------------------------------------- personal data

    def _declare_personal_data(self) -> None:
        """(Re)publish on /data_management what is kept about people, where, for how long (transient-local)."""
        learner, pipeline = self.learner, self.pipeline
        self._data_management.declare(self.memory_dir, self.param("retention_days"),
                                      identity=pipeline is not None and pipeline.identity is not None,
                                      population=learner is not None and learner.use_population)

    def _forget_expired_at_start(self) -> None:
        """Forget everyone not seen for retention_days before the node serves, waiting for the erasures."""
        gone = self._check_retention()
        if gone and not self.session.worker.wait_idle(RETENTION_WAIT_S):
            self.get_logger().warning(f"retention: erasing {len(gone)} people takes longer than "
                                      f"{RETENTION_WAIT_S:.0f} s; it goes on in the background")

    def _check_retention(self) -> list[str]:
        """Queue the erasure of people not seen for retention_days (the daily timer, configure, a new value)."""
        session = self.session
        if session is None:
            return []
        try:
            return session.apply_retention(self.param("retention_days"))
        except Exception as error:  # noqa: BLE001 - a failed check is logged and tried again at the next one
            self.get_logger().error(f"retention check failed: {describe_error(error)}", throttle_duration_sec=60.0)
            return []

    def _on_list_people(self, request, response: ListPeople.Response):
        if self.session is None:
            return response
        people = self.session.people()
        response.person_ids = sorted(people)
        response.samples = [people[p] for p in response.person_ids]
        return response

    # -------------------------------------------------------- worker helpers

    def _stop_worker(self) -> None:
        with self._frame_ready:
            self._running = False
            self._newest = None
            if self._ros4hri is not None:
                self._ros4hri.take()
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    # ---------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        median_ms = self.stats.median_processing_ms()
        learner, session = self.learner, self.session
        learning = session.worker if session is not None else None
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
            }
        ros4hri = self._ros4hri
        values["input"] = self.param("input") + (" (frames are face crops)" if ros4hri is not None else "")
        if ros4hri is not None:
            values["faces tracked"] = len(ros4hri.tracked())
        labels = session.label_counts() if session is not None else dict.fromkeys(
            ("received", "used", "unmatched", "rejected", "dropped", "waiting"), 0)
        values.update({f"labels {outcome}": count for outcome, count in labels.items()})
        if learner is not None:
            values["people known"] = len(learner.people())
            values["features"] = learner.features_name
            values["imagination"] = learner.imagination
            for person_id, memory in list(learner.memories.items())[:16]:
                values[f"neurons {person_id}"] = f"episodic {memory.episodic_.n_nodes_}, semantic {memory.semantic_.n_nodes_}"
        if learning is not None:
            values["learning queue"] = learning.queue_length
            values["learning jobs done"] = learning.completed
            values["learning jobs failed"] = learning.failed
            values["learning jobs refused"] = learning.rejected
            values["people forgotten"] = learning.forgotten
            values["retention days"] = self.param("retention_days")
            values["identities merged"] = learning.merged
            values["identities split"] = learning.split
            values["last learning error"] = learning.last_error or "none"
            values["saves"] = learning.saves
            values["failed saves in a row"] = learning.save_failures
            values["last save error"] = learning.save_error or "none"
            values["last learning s"] = f"{learning.last_duration_s:.2f}"
        values["expression prior"] = "FER2013 mini-Xception (fer 25.10.3)"
        values["files set aside"] = len(self.set_aside)
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: expression pipeline", hardware_id="clifer")
        if learning is not None and learning.save_error:
            status.level = DiagnosticStatus.ERROR
            status.message = f"saving failed {learning.save_failures}x (learning kept in RAM): {learning.save_error}"
        elif self._state != "active":
            status.level, status.message = DiagnosticStatus.OK, self._state
        elif self.stats.failed:
            status.level, status.message = DiagnosticStatus.ERROR, f"{self.stats.failed} frames failed (see log)"
        elif self.set_aside:
            status.level, status.message = DiagnosticStatus.WARN, f"{len(self.set_aside)} corrupt memory files set aside"
        elif median_ms > self.param("max_processing_ms"):
            status.level, status.message = DiagnosticStatus.WARN, f"slow: median {median_ms:.0f} ms per frame"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def draw_estimates(frame_rgb, estimates):
    """The frame with each face's box, person, expression and confidence drawn on it."""
    import cv2

    canvas = frame_rgb.copy()
    for estimate in estimates:
        x0, y0, x1, y1 = estimate.roi
        colour = (0, 200, 0) if estimate.memory == "fused" else (200, 200, 200)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 2)
        text = f"{estimate.person_id or '?'}: {estimate.label} {estimate.confidence:.2f} [{estimate.memory}]"
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(0, y0 - height - baseline - 6)
        cv2.rectangle(canvas, (x0, top), (x0 + width + 6, top + height + baseline + 6), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, text, (x0 + 3, top + height + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``clifer_node [--autostart] --ros-args ...``.

    Without ``--autostart`` the node waits, unconfigured, for a lifecycle
    manager (``ros2 launch`` drives it), as ROS 2 lifecycle nodes do.

    The executor spins in its own thread and the main thread only waits for
    SIGINT or SIGTERM (Python handlers; rclpy's own are not installed): a
    signal then always reaches the shutdown path, whatever the executor's wait
    is doing, and from the signal the process has a bounded time to save and exit.
    """
    argv = sys.argv if argv is None else argv
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    autostart = "--autostart" in rclpy.utilities.remove_ros_args(argv)[1:]
    node = CliferNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spin_errors: list[BaseException] = []
    spinner = threading.Thread(target=_spin, args=(executor, spin_errors), name="clifer-executor", daemon=True)
    try:
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed")
                return 1
            node.trigger_activate()
        spinner.start()
        while spinner.is_alive() and not stop_requested.wait(SIGNAL_POLL_S):
            pass
    finally:
        node._stop_worker()
        _exit_if_shutdown_hangs()
        node._release()
        callbacks_finished = executor.shutdown(timeout_sec=SHUTDOWN_GRACE_S)
        if spinner.is_alive():
            spinner.join(timeout=SHUTDOWN_GRACE_S)
            callbacks_finished = callbacks_finished and not spinner.is_alive()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if spin_errors:
        raise spin_errors[0]
    if not callbacks_finished:
        # Learning is saved by now; a callback stuck in DDS must not keep Ctrl-C from ending the process
        # (the executor's pool threads are joined at interpreter exit).
        print(f"clifer_node: callbacks still running {SHUTDOWN_GRACE_S:.0f} s after shutdown; exiting without them",
              file=sys.stderr, flush=True)
        os._exit(0)
    return 0


def _spin(executor: MultiThreadedExecutor, errors: list[BaseException]) -> None:
    """Spin until the executor or the context is shut down; an unexpected error is kept for the main thread."""
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except Exception as error:  # noqa: BLE001 (re-raised by main() once learning is saved)
        if rclpy.ok():
            errors.append(error)


def _exit_if_shutdown_hangs() -> None:
    """End the process if the final save and what follows it (releasing models, DDS teardown, interpreter exit)
    take longer than :data:`SHUTDOWN_DEADLINE_S`: saves are atomic, and a signal must end the node."""
    def exit_now():
        print(f"clifer_node: shutdown still running {SHUTDOWN_DEADLINE_S:.0f} s after the frame worker stopped; "
              "exiting", file=sys.stderr, flush=True)
        os._exit(0)

    watchdog = threading.Timer(SHUTDOWN_DEADLINE_S, exit_now)
    watchdog.daemon = True
    watchdog.start()


if __name__ == "__main__":
    sys.exit(main())
