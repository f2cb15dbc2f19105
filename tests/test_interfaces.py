"""The ROS4HRI message copies built from interfaces/ keep upstream's fields, types and order.

The RIHS01 type hash, and so whether a ROS4HRI robot's nodes can talk to ours, depends on exactly
these (not on comments or constants' comments); a field renamed or reordered here would silently make
the node deaf to hri_face_detect and invisible to the privacy tooling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

UPSTREAM_FIELDS = {
    # ros4hri/hri_msgs 2.x
    ("hri_msgs", "Expression"): {"header": "std_msgs/Header", "expression": "string", "valence": "float",
                                 "arousal": "float", "confidence": "float"},
    ("hri_msgs", "IdsList"): {"header": "std_msgs/Header", "ids": "sequence<string>"},
    ("hri_msgs", "IdsMatch"): {"id1": "string", "id1_type": "int8", "id2": "string", "id2_type": "int8",
                               "confidence": "float"},
    # ros4hri/hri_privacy_msgs 1.2
    ("hri_privacy_msgs", "PersonalDataProcessor"): {"data_source_node": "string", "user_friendly_source_name": "string",
                                                    "data_purpose": "string", "path": "string"},
}


@pytest.mark.parametrize("package,name", sorted(UPSTREAM_FIELDS))
def test_fields_types_and_order_match_upstream(package, name):
    module = __import__(f"{package}.msg", fromlist=[name])
    fields = getattr(module, name).get_fields_and_field_types()
    assert list(fields.items()) == list(UPSTREAM_FIELDS[(package, name)].items())


@pytest.mark.parametrize("package,name", sorted(UPSTREAM_FIELDS))
def test_the_type_description_hash_is_generated_under_the_upstream_type_name(package, name):
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    descriptions = [p / "share" / package / "msg" / f"{name}.json" for p in prefixes]
    found = [path for path in descriptions if path.is_file()]
    assert found, f"no generated type description for {package}/{name} under AMENT_PREFIX_PATH"
    hashes = json.loads(found[0].read_text())["type_hashes"]
    assert hashes[0]["type_name"] == f"{package}/msg/{name}"
    assert hashes[0]["hash_string"].startswith("RIHS01_")


def test_ids_match_keeps_upstreams_id_type_constants():
    from hri_msgs.msg import IdsMatch

    assert (IdsMatch.UNSET, IdsMatch.PERSON, IdsMatch.FACE, IdsMatch.BODY, IdsMatch.VOICE) == (0, 1, 2, 3, 4)
