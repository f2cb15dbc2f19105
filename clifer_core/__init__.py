"""CLIFER core: per-person continual facial-expression learning, with no ROS import.

Modules: ``faces`` (detect, align, track, identity), ``memory`` (growing dual
memory), ``imagination`` (CAAE), ``features``, ``learner``, ``pipeline`` and
``evaluation``. Expression labels use the canonical order in
:data:`clifer_core.labels.EXPRESSIONS`.
"""

__version__ = "0.1.0"
