"""CLIFER core: per-person continual facial-expression learning, with no ROS import.

Modules: ``faces`` (detect, align, track, identity), ``memory`` (growing dual
memory), ``imagination`` (CAAE), ``features``, ``learner``, ``pipeline``,
``data`` (dataset readers and caches) and ``evaluation``. Expression labels use
the canonical order in :data:`clifer_core.labels.EXPRESSIONS`.

Every entry point (``clifer``, ``clifer_node``, ``clifer_demo``) imports this
package before TensorFlow, so TensorFlow's C++ start-up chatter (CPU feature
notes, the oneDNN note and absl's pre-init line) is silenced here
(:mod:`clifer_core.tensorflow_startup`); warnings and errors from Python and
real C++ errors still show. ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clifer_core.tensorflow_startup import quiet_first_import  # noqa: E402 (after the log level is set)

quiet_first_import()

__version__ = "0.1.0"
