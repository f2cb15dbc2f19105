"""The CLIFER lifecycle node: camera frames in, stamped per-person expression estimates out.

configure loads the models and the saved memories (slow; fails cleanly);
activate subscribes and starts the frame worker; deactivate stops it; cleanup
and shutdown save. The image callback only stores the newest frame; a worker
thread runs :class:`clifer_core.pipeline.FramePipeline` on it as soon as it is
free, so a slow frame never queues a backlog (frames replaced before
processing are counted as dropped). Learning runs in a
:class:`clifer_ros.learning.LearningWorker` thread and never blocks inference.
"""

from __future__ import annotations

import os
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
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from clifer.msg import ExpressionEstimateArray, ExpressionLabel
from clifer.srv import ForgetPerson, ListPeople, Teach
from clifer_core.people import PEOPLE_FOLDER, person_id_problem, person_of_file, shown
from clifer_core.persistence import set_aside
from clifer_ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    estimates_to_array_msg,
    image_to_rgb,
    rgb_to_image,
)
from clifer_ros.learning import LearningJob, LearningWorker, describe_error
from clifer_ros.parameters import BY_NAME, PARAMETERS

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
LABEL_WAIT_S = 5.0
MAX_PENDING_LABELS = 500
AUTOSAVE_TICK_S = 1.0
"""How often the autosave timer looks whether a save (or a retry after a failed one) is due."""
SELF_TRAINING_INTERVAL_S = 2.0


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
        self.labels_received = 0
        self.labels_used = 0
        """Turned into a learning job."""
        self.labels_unmatched = 0
        """Their frame or face was never seen (within LABEL_WAIT_S)."""
        self.labels_rejected = 0
        """Invalid: person id, expression, or a failure while matching."""
        self.labels_dropped = 0
        """Valid but not learned: learning off, learning queue full, or too many waiting."""
        self.last_processing_ms = 0.0
        self.processing_ms: deque[float] = deque(maxlen=100)

    def add_processing(self, milliseconds: float, faces: int) -> None:
        with self.lock:
            self.processed += 1
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
        self.learning: LearningWorker | None = None
        self.stats = FrameStats()
        self.set_aside: dict[str, str] = {}
        self._newest = None
        self._frame_ready = threading.Condition()
        self._running = False
        self._worker: threading.Thread | None = None
        self._inputs = []
        self._housekeeping = []
        self._memory_services = []
        self._expressions_pub = None
        self._debug_pub = None
        self._diagnostics_pub = None
        self._pending_labels: deque = deque()
        self._diagnostics_timer = None
        self._labels_lock = threading.Lock()
        self._seeded: set[str] = set()
        self._face_publishers: dict[str, object] = {}
        self._last_self_training: dict[str, float] = {}
        self._confident_runs: dict[str, tuple[str, int]] = {}
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
            elif parameter.name == "learning_enabled" and self.learning is not None:
                self.learning.enabled = bool(parameter.value)
            elif parameter.name == "diagnostics_period_s" and self._diagnostics_timer is not None:
                self._start_diagnostics_timer(parameter.value)

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
        try:
            self._build_models()
        except (OSError, ValueError, ImportError) as error:
            self.get_logger().error(f"cannot load the models: {error}")
            self.pipeline = self.learner = None
            return TransitionCallbackReturn.FAILURE
        self.learning = LearningWorker(self.learner, self.memory_dir, self.get_logger(), identity=self.pipeline.identity)
        self.learning.enabled = self.param("learning_enabled")
        self._expressions_pub = self.create_lifecycle_publisher(ExpressionEstimateArray, "~/expressions", RESULTS_QOS)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", RESULTS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        services = ReentrantCallbackGroup()
        self._memory_services = [
            self.create_service(srv_type, name, self._never_raising(callback), callback_group=services)
            for srv_type, name, callback in (
                (Teach, "~/teach", self._on_teach), (ForgetPerson, "~/forget_person", self._on_forget_person),
                (ListPeople, "~/list_people", self._on_list_people), (Trigger, "~/save", self._on_save),
                (Trigger, "~/load", self._on_load), (Trigger, "~/reset", self._on_reset))
        ]
        self._housekeeping_group = MutuallyExclusiveCallbackGroup()
        self._housekeeping = [self.create_timer(AUTOSAVE_TICK_S, self._autosave, self._housekeeping_group)]
        self._start_diagnostics_timer(self.param("diagnostics_period_s"))
        self._state = "inactive"
        self.get_logger().info(
            f"configured: detector {self.param('detector')}, features {self.learner.features_name}, "
            f"imagination {self.learner.imagination}, {len(self.learner.people())} people known, "
            f"memories in {self.memory_dir or 'RAM only'}")
        return TransitionCallbackReturn.SUCCESS

    def _build_models(self) -> None:
        from clifer_core.build import build_pipeline
        from clifer_core.persistence import StateFileError
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
            population_model=self.param("population_model"),
            identity_config=self.param("identity_config"), identity_threshold=self.param("identity_threshold"),
            auto_enrol=self.param("auto_enrol"), warn=self.get_logger().warning)
        try:
            gallery_path = self._gallery_path()
            if pipeline.identity is not None and gallery_path is not None and gallery_path.is_file():
                try:
                    pipeline.identity.restore_gallery(gallery_path)
                except StateFileError as error:
                    self._set_aside(gallery_path, str(error))
            if self.memory_dir is not None and self.memory_dir.is_dir():
                for path, problem in pipeline.learner.load(self.memory_dir).items():
                    self._record_set_aside(path, problem)
            pipeline.warm_up()
            pipeline.learner.warm_up(config.crop_size)
        except BaseException:
            pipeline.close()
            raise
        self.learner, self.pipeline = pipeline.learner, pipeline

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

    def _gallery_path(self) -> Path | None:
        return self.memory_dir / "identity.npz" if self.memory_dir is not None else None

    def _set_aside(self, path: Path, problem: str) -> None:
        self._record_set_aside(str(path), problem, set_aside(path))

    def _record_set_aside(self, path: str, problem: str, renamed: Path | None = None) -> None:
        self.set_aside[path] = problem
        self.get_logger().error(f"set aside {path} (renamed {renamed.name if renamed else '*.corrupt'}): {problem}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        frames = MutuallyExclusiveCallbackGroup()
        if self.param("image_transport") == "compressed":
            image = self.create_subscription(CompressedImage, "image/compressed", self._on_image, IMAGE_QOS,
                                             callback_group=frames)
        else:
            image = self.create_subscription(Image, "image", self._on_image, IMAGE_QOS, callback_group=frames)
        labels = self.create_subscription(ExpressionLabel, "labels", self._on_label, LABELS_QOS,
                                          callback_group=MutuallyExclusiveCallbackGroup())
        self._inputs = [image, labels]
        self._running = True
        self._worker = threading.Thread(target=self._process_frames, name="clifer-frames", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(f"active: images on {image.topic_name}, labels on {labels.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
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
        """Finish and save learning, then drop timers, services and publishers, and close the models (threads)."""
        if self.learning is not None:
            self.learning.stop()
            self._save_all()
            self.learning = None
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
            self._publish_rep155(pipeline, estimates, msg.header)
        self._teach_from_frame(pipeline, estimates)

    def _publish_rep155(self, pipeline, estimates, header) -> None:
        """One hri_msgs/Expression per face on /humans/faces/<id>/expression; publishers live as long as the track."""
        for estimate in estimates:
            publisher = self._face_publishers.get(estimate.face_id)
            if publisher is None:
                publisher = self.create_publisher(HriExpression, f"/humans/faces/{estimate.face_id}/expression",
                                                  RESULTS_QOS)
                self._face_publishers[estimate.face_id] = publisher
            publisher.publish(HriExpression(header=header, expression=estimate.label, valence=float(estimate.valence),
                                            arousal=float(estimate.arousal), confidence=estimate.confidence))
        live = {track.face_id for track in pipeline.tracker.tracks}
        for face_id in [face_id for face_id in self._face_publishers if face_id not in live]:
            self.destroy_publisher(self._face_publishers.pop(face_id))

    # ------------------------------------------------------------- teachers

    def _teach_from_frame(self, pipeline, estimates) -> None:
        """After a frame: match waiting labels, seed memories of people met for the first time, self-train.

        Self-training learns an estimate as a label only once the face's
        estimate has kept the same label at or above ``self_training_threshold``
        for ``self_training_frames`` frames in a row, and at most every
        ``SELF_TRAINING_INTERVAL_S`` per person: one confident blip cannot
        poison a memory.
        """
        self._match_labels(pipeline)
        runs = self._confident_runs_of(estimates)
        learner, learning = self.learner, self.learning
        if learner is None or learning is None or not learning.enabled:
            return
        now = time.monotonic()
        for estimate in estimates:
            person_id = estimate.person_id
            if person_id is None:
                continue
            if learner.imagination != "none" and person_id not in self._seeded and not learner.knows(person_id):
                crops = pipeline.recent_crops(estimate.face_id)
                if len(crops) >= self.param("seed_faces"):
                    self._seeded.add(person_id)
                    learning.submit(LearningJob(person_id, crops, None, "first meeting"))
            if (self.param("self_training") and runs.get(estimate.face_id, 0) >= self.param("self_training_frames")
                    and now - self._last_self_training.get(person_id, 0.0) >= SELF_TRAINING_INTERVAL_S
                    and estimate.label in learner.classes):
                self._last_self_training[person_id] = now
                crops = pipeline.recent_crops(estimate.face_id, 1)
                learning.submit(LearningJob(person_id, crops, [estimate.label], "self-training"))

    def _confident_runs_of(self, estimates) -> dict[str, int]:
        """Frames in a row each face's estimate has kept its label at or above ``self_training_threshold``
        (a face missing from this frame, or below the threshold, starts again)."""
        threshold = self.param("self_training_threshold")
        runs = {}
        for estimate in estimates:
            label, count = self._confident_runs.get(estimate.face_id, (None, 0))
            if estimate.confidence >= threshold:
                runs[estimate.face_id] = (estimate.label, count + 1 if label == estimate.label else 1)
        self._confident_runs = runs
        return {face_id: count for face_id, (_, count) in runs.items()}

    def _on_label(self, msg: ExpressionLabel) -> None:
        """Keep a valid label until its frame is processed; count every label as it goes (see FrameStats)."""
        problem = self._label_problem(msg)
        with self.stats.lock:
            self.stats.labels_received += 1
            if problem:
                self.stats.labels_rejected += 1
        if problem:
            self.get_logger().warning(f"label rejected: {problem}", throttle_duration_sec=5.0)
            return
        with self._labels_lock:
            overflow = len(self._pending_labels) >= MAX_PENDING_LABELS
            if overflow:
                self._pending_labels.popleft()
            self._pending_labels.append((time.monotonic(), msg))
        if overflow:
            with self.stats.lock:
                self.stats.labels_dropped += 1
            self.get_logger().warning(f"more than {MAX_PENDING_LABELS} labels wait for their frames: oldest dropped",
                                      throttle_duration_sec=5.0)

    def _label_problem(self, msg: ExpressionLabel) -> str | None:
        """Why a label cannot be learned, whatever frame it refers to (None if it can)."""
        if msg.person_id:
            problem = person_id_problem(msg.person_id)
            if problem:
                return problem
        learner = self.learner
        if learner is not None:
            try:
                learner.label_indices([msg.expression])
            except ValueError:
                return f"expression {shown(msg.expression)} is not among {', '.join(learner.classes)}"
        return None

    def _match_labels(self, pipeline) -> None:
        """Turn labels whose frame has been processed into learning jobs (labels may arrive before their frame)."""
        now = time.monotonic()
        with self._labels_lock:
            waiting, self._pending_labels = list(self._pending_labels), deque()
        still_waiting = []
        for arrived, msg in waiting:
            try:
                faces = pipeline.frame_faces(stamp_seconds(msg.header))
                if faces is None:
                    if now - arrived < LABEL_WAIT_S:
                        still_waiting.append((arrived, msg))
                    else:
                        self._count_label("labels_unmatched")
                    continue
                self._count_label(self._learn_label(pipeline, faces, msg))
            except Exception as error:  # noqa: BLE001 - one bad label must not lose the others
                self._count_label("labels_rejected")
                self.get_logger().error(f"label failed: {describe_error(error)}", throttle_duration_sec=5.0)
        with self._labels_lock:
            self._pending_labels.extendleft(reversed(still_waiting))

    def _count_label(self, counter: str) -> None:
        with self.stats.lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _learn_label(self, pipeline, faces, msg: ExpressionLabel) -> str:
        """Queue what a label teaches; returns the counter it belongs to."""
        if msg.face_id:
            index = faces.face_ids.index(msg.face_id) if msg.face_id in faces.face_ids else None
        else:
            index = max(range(len(faces.face_ids)), key=lambda i: faces.areas[i]) if faces.face_ids else None
        person_id = msg.person_id or (faces.person_ids[index] if index is not None else None)
        if index is None or not person_id:
            return "labels_unmatched"
        if self.learning is None or not self.learning.enabled:
            return "labels_dropped"
        if msg.person_id and pipeline.identity is not None:
            pipeline.identity.set_external_identity(faces.face_ids[index], msg.person_id)
        self._seeded.add(person_id)
        queued = self.learning.submit(LearningJob(person_id, faces.crops[index:index + 1], [msg.expression], "labels topic"))
        return "labels_used" if queued else "labels_dropped"

    def _on_teach(self, request: Teach.Request, response: Teach.Response) -> Teach.Response:
        pipeline, learner, learning = self.pipeline, self.learner, self.learning
        if pipeline is None or learning is None:
            response.success, response.message = False, "node is not configured"
            return response
        if not learning.enabled:
            response.success, response.message = False, "learning is disabled (learning_enabled:=false)"
            return response
        if request.person_id:
            problem = person_id_problem(request.person_id)
            if problem:
                self.get_logger().warning(f"teach refused: {problem}", throttle_duration_sec=5.0)
                response.success, response.message = False, f"refused: {problem}"
                return response
        try:
            learner.label_indices([request.expression])
        except ValueError:
            response.success = False
            response.message = f"expression {shown(request.expression)} is not among {', '.join(learner.classes)}"
            return response
        face_id = request.face_id
        if not face_id and request.person_id:
            faces = pipeline.faces_of(request.person_id)
            face_id = faces[0] if faces else ""
        person_id = request.person_id or (pipeline.person_of(face_id) if face_id else None)
        crops = pipeline.recent_crops(face_id, self.param("teach_samples")) if face_id else []
        if len(crops) == 0:
            response.success = False
            response.message = f"no current face for face_id={shown(request.face_id)} person_id={shown(request.person_id)}"
            return response
        if not person_id:
            response.success, response.message = False, f"face {face_id} is not identified yet; give person_id"
            return response
        if request.person_id and pipeline.identity is not None and pipeline.person_of(face_id) != person_id:
            pipeline.identity.set_external_identity(face_id, person_id)
        self._seeded.add(person_id)
        queued = learning.submit(LearningJob(person_id, crops, [request.expression] * len(crops), "teach service"))
        response.success, response.person_id = queued, person_id
        response.message = (f"learning {len(crops)} faces of {person_id} as {request.expression}" if queued
                            else "learning queue full; try again")
        return response

    # ------------------------------------------------------ memory services

    def _save_all(self) -> None:
        """Save everything (shutdown, cleanup); a failure is logged and on /diagnostics, never raised."""
        if self.learning is None:
            return
        try:
            self.learning.save(everything=True)
        except Exception as error:  # noqa: BLE001 - recorded by the worker; the node must still shut down cleanly
            self.get_logger().error(f"final save failed, learning since the last save is lost: {describe_error(error)}")

    def _autosave(self) -> None:
        if self.learning is not None:
            self.learning.autosave(self.param("autosave_period_s"))

    def _on_save(self, request, response):
        if self.learning is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        try:
            saved = self.learning.save(everything=True)
        except Exception as error:  # noqa: BLE001 - the reply says why; learning stays in RAM and autosave retries
            response.success = False
            response.message = f"saving failed: {describe_error(error)}; learning is kept in RAM and saved when possible"
            return response
        response.success, response.message = True, f"saved {len(saved)} people to {self.memory_dir}"
        return response

    def _on_load(self, request, response):
        if self.learner is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        with self.learning.disk:
            problems = self.learner.load(self.memory_dir)
            for path, problem in problems.items():
                self._record_set_aside(path, problem)
            gallery_path = self._gallery_path()
            if self.pipeline.identity is not None and gallery_path.is_file():
                try:
                    self.pipeline.identity.restore_gallery(gallery_path)
                    self.learning.gallery_saved()
                except ValueError as error:
                    self._set_aside(gallery_path, str(error))
                    problems[str(gallery_path)] = str(error)
        response.success = True
        response.message = f"loaded {len(self.learner.people())} people" + (f"; set aside {len(problems)} files" if problems else "")
        return response

    def _on_reset(self, request, response):
        if self.learner is None:
            response.success, response.message = False, "node is not configured"
            return response
        self.learner.reset()
        self._seeded.clear()
        response.success, response.message = True, "all expression memories cleared (identities and files kept)"
        return response

    def _on_forget_person(self, request: ForgetPerson.Request, response: ForgetPerson.Response):
        """Queue the erasure on the learning worker: it runs after the jobs already queued, off the executor."""
        if self.learner is None or self.learning is None:
            response.success, response.message = False, "node is not configured"
            return response
        problem = person_id_problem(request.person_id)
        if problem:
            self.get_logger().warning(f"forget_person refused: {problem}", throttle_duration_sec=5.0)
            response.success, response.message = False, f"refused: {problem}"
            return response
        person_id = request.person_id
        identity = self.pipeline.identity if self.pipeline is not None else None
        if not (self.learner.knows(person_id) or (identity is not None and person_id in identity.people())
                or self._has_files(person_id)):
            response.success, response.message = False, f"{person_id} is not known"
            return response
        ahead = self.learning.submit_forget(person_id)
        self._seeded.discard(person_id)
        response.success = True
        response.message = (f"forgetting {person_id}: queued after {ahead} learning jobs; memory, identity and files "
                            "are erased when it runs (see ~/list_people)")
        return response

    def _has_files(self, person_id: str) -> bool:
        """Whether ``memory_dir/people`` holds any file of this (valid) person, set-aside copies included."""
        folder = self.memory_dir / PEOPLE_FOLDER if self.memory_dir is not None else None
        if folder is None or not folder.is_dir():
            return False
        return any(person_of_file(path) == person_id for path in folder.glob(f"{person_id}.*"))

    def _on_list_people(self, request, response: ListPeople.Response):
        if self.learner is None:
            return response
        people = dict(self.learner.people())
        if self.pipeline is not None and self.pipeline.identity is not None:
            for person_id in self.pipeline.identity.people():
                people.setdefault(person_id, 0)
        response.person_ids = sorted(people)
        response.samples = [people[p] for p in response.person_ids]
        return response

    # -------------------------------------------------------- worker helpers

    def _stop_worker(self) -> None:
        with self._frame_ready:
            self._running = False
            self._newest = None
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    # ---------------------------------------------------------- diagnostics

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        median_ms = self.stats.median_processing_ms()
        learner, learning = self.learner, self.learning
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
                "labels received": self.stats.labels_received,
                "labels used": self.stats.labels_used,
                "labels unmatched": self.stats.labels_unmatched,
                "labels rejected": self.stats.labels_rejected,
                "labels dropped": self.stats.labels_dropped,
            }
        with self._labels_lock:
            values["labels waiting"] = len(self._pending_labels)
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
    """
    argv = sys.argv if argv is None else argv
    rclpy.init(args=argv)
    autostart = "--autostart" in rclpy.utilities.remove_ros_args(argv)[1:]
    node = CliferNode()
    executor = MultiThreadedExecutor(num_threads=4)
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
        node._release()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
