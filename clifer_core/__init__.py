"""CLIFER core: per-person continual facial-expression learning, with no ROS import.

Modules: ``faces`` (detect, align, track, identity), ``memory`` (growing dual
memory), ``imagination`` (CAAE), ``features``, ``learner``, ``pipeline``,
``data`` (dataset readers and caches) and ``evaluation``. Expression labels use
the canonical order in :data:`clifer_core.labels.EXPRESSIONS`.

Every entry point (``clifer``, ``clifer_node``, ``clifer_demo``) imports this
package before TensorFlow, so TensorFlow's C++ start-up chatter (CPU feature
notes, absl's pre-init line) is silenced here; warnings and errors from Python
and real C++ errors still show. Set ``TF_CPP_MIN_LOG_LEVEL`` to override.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
