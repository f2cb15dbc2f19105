"""One construction path: the frame pipeline, its identity and the learner.

The live node, bag evaluation, the demo (through the node), benchmarks and
tests all build their models here, so the identity calibration is found one
way, the "no imagination model" fallback happens one way, and the defaults
below are the only ones (the ROS parameter table reads them too).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

from clifer_core.faces.identity import IDENTITY_CONFIG, Identity
from clifer_core.learner import DEFAULT_FEATURES, DEFAULT_IMAGINATION, DEFAULT_POPULATION_MODEL
from clifer_core.pipeline import BackgroundIdentity, FramePipeline, PipelineConfig

PACKAGE = "clifer"

_log = logging.getLogger("clifer")


def installed_share_file(relative: str | Path) -> Path | None:
    """``share/clifer/<relative>`` under an ament prefix (``AMENT_PREFIX_PATH``) or this interpreter's prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        candidate = Path(prefix) / "share" / PACKAGE / relative
        if candidate.is_file():
            return candidate
    return None


def identity_config_path(explicit: str | Path | None = None) -> Path:
    """The identity calibration to use: ``explicit`` (must exist), else the source tree's, else the installed one.

    Falls back to the source tree's path even when absent, which means the
    gallery's built-in defaults (:func:`~clifer_core.faces.identity.load_identity_config` returns {}).
    """
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ValueError(f"identity_config {path} does not exist")
        return path
    if IDENTITY_CONFIG.is_file():
        return IDENTITY_CONFIG
    return installed_share_file(Path("config") / "identity.yaml") or IDENTITY_CONFIG


def build_identity(config_path: str | Path | None = None, threshold: float | None = None, auto_enrol: bool = True,
                   clock=None, background: bool = False) -> Identity:
    """An identity resolver on a gallery calibrated by :func:`identity_config_path` (``threshold`` overrides it).

    ``clock`` drives the resolver's embedding schedule (a bag's clock keeps bag
    evaluation deterministic); ``background`` runs it in a worker thread.
    """
    from clifer_core.faces.identity import FaceEmbedder, IdentityGallery, IdentityResolver

    overrides = {"threshold": float(threshold)} if threshold else {}
    gallery = IdentityGallery.from_config(identity_config_path(config_path), auto_enrol=auto_enrol, **overrides)
    resolver = IdentityResolver(FaceEmbedder(), gallery, **({"clock": clock} if clock is not None else {}))
    return BackgroundIdentity(resolver) if background else resolver


def available_imagination(imagination: str, warn: Callable[[str], None] = _log.warning,
                           imagination_model: str | Path | None = None) -> str:
    """``imagination``, or ``none`` (with a warning) when the packaged imagination model is missing; a model file
    named explicitly (``imagination_model``) must exist (the learner checks it)."""
    from clifer_core.imagination.imaginer import DEFAULT_MODEL_PATH

    if imagination != "none" and imagination_model is None and not DEFAULT_MODEL_PATH.is_file():
        warn(f"no imagination model at {DEFAULT_MODEL_PATH}: learning without imagination")
        return "none"
    return imagination


def build_learner(features: str = DEFAULT_FEATURES, imagination: str = DEFAULT_IMAGINATION, feature_model=None,
                  warn: Callable[[str], None] = _log.warning, population_model: str = DEFAULT_POPULATION_MODEL,
                  **options):
    """A :class:`~clifer_core.learner.CliferLearner`, without imagination when its model is not installed."""
    from clifer_core.learner import CliferLearner

    return CliferLearner(features=features,
                         imagination=available_imagination(imagination, warn, options.get("imagination_model")),
                         feature_model=feature_model, population_model=population_model, **options)


def build_pipeline(config: PipelineConfig | None = None, *, learner: bool = True, features: str = DEFAULT_FEATURES,
                   imagination: str = DEFAULT_IMAGINATION, identity_config: str | Path | None = None,
                   identity_threshold: float | None = None, auto_enrol: bool = True, identity_clock=None,
                   detector=None, expression_model=None, warn: Callable[[str], None] = _log.warning,
                   **learner_options) -> FramePipeline:
    """A :class:`FramePipeline` (identity per ``config``) with a learner sharing its FER2013 model as ``.learner``.

    ``learner=False`` leaves ``pipeline.learner`` None (the prior answers for
    everyone). Pass ``detector``/``expression_model`` to share loaded models
    between pipelines. Close the pipeline when done (it may own a thread).
    """
    config = config or PipelineConfig()
    identity = None
    if config.identity:
        identity = build_identity(identity_config, identity_threshold, auto_enrol, identity_clock,
                                  background=config.identity_in_background)
    pipeline = FramePipeline(config, detector=detector, expression_model=expression_model, identity=identity)
    if learner:
        try:
            pipeline.learner = build_learner(features, imagination, feature_model=pipeline.expression_model,
                                             warn=warn, **learner_options)
        except Exception:
            pipeline.close()
            raise
    return pipeline
