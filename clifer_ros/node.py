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
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from clifer.msg import ExpressionEstimateArray, ExpressionLabel
from clifer.srv import ForgetPerson, ListPeople, Teach
from clifer_ros.conversions import (
    ImageConversionError,
    compressed_to_rgb,
    estimates_to_array_msg,
    image_to_rgb,
    rgb_to_image,
)
from clifer_ros.learning import LearningJob, LearningWorker
from clifer_ros.parameters import BY_NAME, PARAMETERS

try:
    from hri_msgs.msg import Expression as HriExpression
except ImportError:
    HriExpression = None

NODE_NAME = "clifer"
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
LABELS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
LABEL_WAIT_S = 5.0
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
        self.labels_used = 0
        self.labels_unmatched = 0
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
        self._pending_labels: deque = deque(maxlen=500)
        self._labels_lock = threading.Lock()
        self._seeded: set[str] = set()
        self._face_publishers: dict[str, object] = {}
        self._last_self_training: dict[str, float] = {}
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
        self.learning = LearningWorker(self.learner, self.memory_dir, self.get_logger())
        self.learning.enabled = self.param("learning_enabled")
        self._expressions_pub = self.create_lifecycle_publisher(ExpressionEstimateArray, "~/expressions", RESULTS_QOS)
        self._debug_pub = self.create_lifecycle_publisher(Image, "~/debug_image", RESULTS_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        services = ReentrantCallbackGroup()
        self._memory_services = [
            self.create_service(Teach, "~/teach", self._on_teach, callback_group=services),
            self.create_service(ForgetPerson, "~/forget_person", self._on_forget_person, callback_group=services),
            self.create_service(ListPeople, "~/list_people", self._on_list_people, callback_group=services),
            self.create_service(Trigger, "~/save", self._on_save, callback_group=services),
            self.create_service(Trigger, "~/load", self._on_load, callback_group=services),
            self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services),
        ]
        housekeeping = MutuallyExclusiveCallbackGroup()
        self._housekeeping = [
            self.create_timer(self.param("diagnostics_period_s"), self._publish_diagnostics, housekeeping),
            self.create_timer(self.param("autosave_period_s"), self._autosave, housekeeping),
        ]
        self._state = "inactive"
        self.get_logger().info(
            f"configured: detector {self.param('detector')}, features {self.learner.features_name}, "
            f"imagination {self.learner.imagination}, {len(self.learner.people())} people known, "
            f"memories in {self.memory_dir or 'RAM only'}")
        return TransitionCallbackReturn.SUCCESS

    def _build_models(self) -> None:
        from clifer_core.faces.identity import FaceEmbedder, IdentityGallery, IdentityResolver
        from clifer_core.imagination.imaginer import DEFAULT_MODEL_PATH
        from clifer_core.learner import CliferLearner
        from clifer_core.persistence import StateFileError
        from clifer_core.pipeline import FramePipeline, PipelineConfig

        config = PipelineConfig(
            detector=self.param("detector"), min_face_score=self.param("min_face_score"),
            track_min_hits=self.param("track_min_hits"), track_max_misses=self.param("track_max_misses"),
            deterministic_ids=self.param("deterministic_ids"), crop_size=self.param("crop_size"),
            crop_margin=self.param("crop_margin"), identity=self.param("identity"),
            recent_crops=max(self.param("seed_faces"), self.param("teach_samples")),
        )
        identity = None
        if config.identity:
            overrides = {"threshold": self.param("identity_threshold")} if self.param("identity_threshold") > 0 else {}
            gallery = IdentityGallery.from_config(self._identity_config(), auto_enrol=self.param("auto_enrol"),
                                                  **overrides)
            gallery_path = self._gallery_path()
            if gallery_path is not None and gallery_path.is_file():
                try:
                    gallery.restore(gallery_path)
                except StateFileError as error:
                    self._set_aside(gallery_path, str(error))
            identity = IdentityResolver(FaceEmbedder(), gallery)
        pipeline = FramePipeline(config, identity=identity)
        imagination = self.param("imagination")
        if imagination != "none" and not DEFAULT_MODEL_PATH.is_file():
            self.get_logger().warning(f"no imagination model at {DEFAULT_MODEL_PATH}: learning without imagination")
            imagination = "none"
        self.learner = CliferLearner(features=self.param("features"), imagination=imagination,
                                     feature_model=pipeline.expression_model)
        if self.memory_dir is not None and self.memory_dir.is_dir():
            for path, problem in self.learner.load(self.memory_dir).items():
                self._record_set_aside(path, problem)
        pipeline.learner = self.learner
        pipeline.warm_up()
        self.learner.warm_up(config.crop_size)
        self.pipeline = pipeline

    def _identity_config(self) -> Path:
        """``identity_config``, else config/identity.yaml of the source tree or of the installed package."""
        from clifer_core.faces.identity import IDENTITY_CONFIG

        if self.param("identity_config"):
            path = Path(self.param("identity_config")).expanduser()
            if not path.is_file():
                raise ValueError(f"identity_config {path} does not exist")
            return path
        if IDENTITY_CONFIG.is_file():
            return IDENTITY_CONFIG
        try:
            from ament_index_python.packages import get_package_share_directory

            return Path(get_package_share_directory("clifer")) / "config" / "identity.yaml"
        except (LookupError, OSError, ValueError):
            return IDENTITY_CONFIG

    def _gallery_path(self) -> Path | None:
        return self.memory_dir / "identity.npz" if self.memory_dir is not None else None

    def _set_aside(self, path: Path, problem: str) -> None:
        path.rename(path.with_name(path.name + ".corrupt"))
        self._record_set_aside(str(path), problem)

    def _record_set_aside(self, path: str, problem: str) -> None:
        self.set_aside[path] = problem
        self.get_logger().error(f"set aside {path} (renamed *.corrupt): {problem}")

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
        """Finish and save learning, then drop models, timers, services and publishers."""
        if self.learning is not None:
            self.learning.stop()
            self._save_all()
            self.learning = None
        for timer in self._housekeeping:
            self.destroy_timer(timer)
        for service in self._memory_services:
            self.destroy_service(service)
        for publisher in (self._expressions_pub, self._debug_pub, self._diagnostics_pub, *self._face_publishers.values()):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._face_publishers = {}
        self._housekeeping, self._memory_services = [], []
        self._expressions_pub = self._debug_pub = self._diagnostics_pub = None
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
            frame = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
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
        """After a frame: match waiting labels, seed memories of people met for the first time, self-train."""
        self._match_labels(pipeline)
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
            if (self.param("self_training") and estimate.confidence >= self.param("self_training_threshold")
                    and now - self._last_self_training.get(person_id, 0.0) >= SELF_TRAINING_INTERVAL_S
                    and estimate.label in learner.classes):
                self._last_self_training[person_id] = now
                crops = pipeline.recent_crops(estimate.face_id, 1)
                learning.submit(LearningJob(person_id, crops, [estimate.label], "self-training"))

    def _on_label(self, msg: ExpressionLabel) -> None:
        with self._labels_lock:
            self._pending_labels.append((time.monotonic(), msg))

    def _match_labels(self, pipeline) -> None:
        """Turn labels whose frame has been processed into learning jobs (labels may arrive before their frame)."""
        now = time.monotonic()
        with self._labels_lock:
            waiting, self._pending_labels = list(self._pending_labels), deque(maxlen=500)
        still_waiting = []
        for arrived, msg in waiting:
            faces = pipeline.frame_faces(stamp_seconds(msg.header))
            if faces is None:
                if now - arrived < LABEL_WAIT_S:
                    still_waiting.append((arrived, msg))
                else:
                    with self.stats.lock:
                        self.stats.labels_unmatched += 1
                continue
            self._learn_label(pipeline, faces, msg)
        with self._labels_lock:
            self._pending_labels.extendleft(reversed(still_waiting))

    def _learn_label(self, pipeline, faces, msg: ExpressionLabel) -> None:
        if msg.face_id:
            index = faces.face_ids.index(msg.face_id) if msg.face_id in faces.face_ids else None
        else:
            index = max(range(len(faces.face_ids)), key=lambda i: faces.areas[i]) if faces.face_ids else None
        person_id = msg.person_id or (faces.person_ids[index] if index is not None else None)
        if index is None or not person_id or self.learning is None:
            with self.stats.lock:
                self.stats.labels_unmatched += 1
            return
        if msg.person_id and pipeline.identity is not None:
            pipeline.identity.set_external_identity(faces.face_ids[index], msg.person_id)
        self._seeded.add(person_id)
        if self.learning.submit(LearningJob(person_id, faces.crops[index:index + 1], [msg.expression], "labels topic")):
            with self.stats.lock:
                self.stats.labels_used += 1

    def _on_teach(self, request: Teach.Request, response: Teach.Response) -> Teach.Response:
        pipeline, learner, learning = self.pipeline, self.learner, self.learning
        if pipeline is None or learning is None:
            response.success, response.message = False, "node is not configured"
            return response
        if not learning.enabled:
            response.success, response.message = False, "learning is disabled (learning_enabled:=false)"
            return response
        face_id = request.face_id
        if not face_id and request.person_id:
            faces = pipeline.faces_of(request.person_id)
            face_id = faces[0] if faces else ""
        person_id = request.person_id or (pipeline.person_of(face_id) if face_id else None)
        crops = pipeline.recent_crops(face_id, self.param("teach_samples")) if face_id else []
        try:
            learner.label_indices([request.expression])
        except ValueError as error:
            response.success, response.message = False, str(error)
            return response
        if len(crops) == 0:
            response.success = False
            response.message = f"no current face for face_id={request.face_id!r} person_id={request.person_id!r}"
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

    def _save_all(self) -> list[str]:
        saved = []
        if self.learning is not None:
            saved = self.learning.save_dirty()
        folder = self.memory_dir
        if folder is not None and self.learner is not None:
            self.learner.save(folder)
            if self.pipeline is not None and self.pipeline.identity is not None:
                self.pipeline.identity.save_gallery(folder / "identity.npz")
        return saved

    def _autosave(self) -> None:
        if self.learning is None:
            return
        saved = self.learning.save_dirty()
        if saved and self.pipeline is not None and self.pipeline.identity is not None and self.memory_dir is not None:
            self.pipeline.identity.save_gallery(self.memory_dir / "identity.npz")

    def _on_save(self, request, response):
        if self.learner is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        self.learning.wait_idle(timeout=30.0)
        self._save_all()
        response.success, response.message = True, f"saved {len(self.learner.people())} people to {self.memory_dir}"
        return response

    def _on_load(self, request, response):
        if self.learner is None or self.memory_dir is None:
            response.success, response.message = False, "not configured, or memory_dir is empty (RAM only)"
            return response
        problems = self.learner.load(self.memory_dir)
        for path, problem in problems.items():
            self._record_set_aside(path, problem)
        if self.pipeline.identity is not None and (self.memory_dir / "identity.npz").is_file():
            self.pipeline.identity.restore_gallery(self.memory_dir / "identity.npz")
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
        if self.learner is None:
            response.success, response.message = False, "node is not configured"
            return response
        person_id = request.person_id
        self.learning.wait_idle(timeout=30.0)
        self.learning.forget(person_id)
        known = self.learner.forget(person_id)
        if self.pipeline.identity is not None:
            known = self.pipeline.identity.forget(person_id) or known
            if self.memory_dir is not None:
                self.pipeline.identity.save_gallery(self.memory_dir / "identity.npz")
        if self.memory_dir is not None:
            self.learner.delete_person_files(self.memory_dir, person_id)
        self._seeded.discard(person_id)
        response.success = known
        response.message = f"forgot {person_id}" if known else f"{person_id} is not known"
        return response

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
                "labels used": self.stats.labels_used,
                "labels unmatched": self.stats.labels_unmatched,
            }
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
            values["last learning s"] = f"{learning.last_duration_s:.2f}"
        values["expression prior"] = "FER2013 mini-Xception (fer 25.10.3)"
        values["files set aside"] = len(self.set_aside)
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: expression pipeline", hardware_id="clifer")
        if self._state != "active":
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
        colour = (0, 200, 0) if estimate.memory == "episodic" else (230, 160, 0) if estimate.memory == "semantic" else (200, 200, 200)
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
    except _rclpy.RCLError:
        if rclpy.ok():
            raise
        # Ctrl-C shut the context down between two waits: rclpy then fails to build its wait set.
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
