"""Person ids: the one check every boundary applies, and the only way to turn an id into a path.

A person id names a file under the memory folder (``people/<id>.npz``) and a
ROS topic segment, so it must be a ROS name token: a letter, then letters,
digits or ``_``. Its length is bounded by :data:`MAX_PERSON_ID_LENGTH` = 64: far
above any id the node makes (``p`` + 8 hex) or a person manager sends (a UUID
is 36), and far below the 255-byte file-name limit even with the longest
name derived from it (``.<id>.npz.<8 random>.tmp``, ``<id>.npz.corrupt``).
Services, the labels topic and files found on disk all call
:func:`check_person_id`; paths are built by :func:`person_path`, which also
checks that the resolved path stays inside the folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

MAX_PERSON_ID_LENGTH = 64
PERSON_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
PEOPLE_FOLDER = "people"
GALLERY_FILE = "identity.npz"
"""The identity gallery, beside the ``people/`` folder in the memory folder."""
SHOWN_CHARACTERS = 40
"""How much of a refused id an error message repeats (a refused id may be megabytes long)."""


class InvalidPersonId(ValueError):
    """A person id that is not a bounded ROS name token, or a path that would leave the memory folder."""


def shown(value, limit: int = SHOWN_CHARACTERS) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long it was: safe to log for any input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_people_map(path, people, values: str, value_problem: Callable[[str, object], str | None]) -> None:
    """Check a state file's ``people`` entry: a dict from valid person ids to ``values``; ``value_problem(person_id,
    value)`` says what is wrong with one value (None: nothing). StateFileError naming ``path`` otherwise."""
    from clifer_core.persistence import StateFileError

    if not isinstance(people, dict):
        raise StateFileError(f"{path}: people must map person ids to {values}, got a {type(people).__name__}")
    for person_id, value in people.items():
        problem = person_id_problem(person_id) or value_problem(person_id, value)
        if problem:
            raise StateFileError(f"{path}: {problem}")


def person_id_problem(person_id) -> str | None:
    """Why ``person_id`` is not a valid person id, or None if it is."""
    if not isinstance(person_id, str):
        return f"person id must be a string, got {type(person_id).__name__}"
    if not person_id:
        return "person id is empty"
    if len(person_id) > MAX_PERSON_ID_LENGTH:
        return f"person id is {len(person_id)} characters long; at most {MAX_PERSON_ID_LENGTH} are allowed"
    if not PERSON_ID.fullmatch(person_id):
        return (f"person id {shown(person_id)} is not a ROS name token "
                "(a letter, then letters, digits or _)")
    return None


def check_person_id(person_id) -> str:
    """``person_id`` if valid, else :class:`InvalidPersonId` saying why."""
    problem = person_id_problem(person_id)
    if problem:
        raise InvalidPersonId(problem)
    return person_id


def person_path(folder: str | os.PathLike, person_id: str, suffix: str = ".npz") -> Path:
    """``<folder>/people/<person_id><suffix>``, for a valid id only, and only if it resolves inside ``folder``."""
    check_person_id(person_id)
    if "/" in suffix or os.sep in suffix or ".." in suffix:
        raise InvalidPersonId(f"file suffix {shown(suffix)} could leave the memory folder")
    root = Path(folder).resolve()
    path = (root / PEOPLE_FOLDER / f"{person_id}{suffix}").resolve()
    if path.parent != root / PEOPLE_FOLDER:
        raise InvalidPersonId(f"{path} is not inside {root / PEOPLE_FOLDER}")
    return path


def person_of_file(path: Path) -> str | None:
    """The person id a ``people/`` file name stands for (``<id>.npz``, ``<id>.npz.corrupt``...), None if invalid."""
    person_id = path.name.split(".", 1)[0]
    return None if person_id_problem(person_id) else person_id
