"""Read and write rosbag2 bags (MCAP or sqlite3) with the pure-Python ``rosbags`` library.

No ROS install is needed: the KILTED typestore plus our own ``clifer/msg``
types (registered from the same ``.msg`` text rosidl builds, so the RIHS01
hashes match rclpy's) (de)serialise every message. Readers wrap whatever a
damaged file makes the storage layer raise into one :class:`BagError` that
names the file and how far reading got; writers never replace an existing bag
unless asked, and then only after the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

IMAGE_TYPE = "sensor_msgs/msg/Image"
LABEL_TYPE = "clifer/msg/ExpressionLabel"
ESTIMATES_TYPE = "clifer/msg/ExpressionEstimateArray"
CLIFER_MESSAGES = ("ExpressionEstimate", "ExpressionEstimateArray", "ExpressionLabel")
STORAGE_SUFFIXES = {"mcap": ".mcap", "sqlite3": ".db3"}

_NO_TIME = QosTime(sec=0, nsec=0)
CAMERA_QOS = Qos(
    QosHistory.KEEP_LAST, 1, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
    _NO_TIME, _NO_TIME, QosLiveliness.AUTOMATIC, _NO_TIME, False,
)
"""What a camera driver offers (rclpy's ``qos_profile_sensor_data``), so ``ros2 bag play`` replays images the same way."""
RELIABLE_QOS = Qos(
    QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
    _NO_TIME, _NO_TIME, QosLiveliness.AUTOMATIC, _NO_TIME, False,
)
"""Labels and results: every message matters, so reliable."""


class BagError(ValueError):
    """A bag cannot be read or written; the message says which file and where."""


@dataclass(frozen=True)
class BagMessage:
    """One serialised message: its position in the bag's time order, topic, type, log time and CDR bytes."""

    index: int
    topic: str
    msgtype: str
    timestamp_ns: int
    raw: bytes


def _clifer_msg_dir() -> Path:
    """The installed ``share/clifer/msg`` (or the source tree's ``msg/``)."""
    prefixes = [Path(sys.prefix)] + [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [prefix / "share" / "clifer" / "msg" for prefix in prefixes]
    candidates.append(Path(__file__).resolve().parents[1] / "msg")
    for candidate in candidates:
        if (candidate / "ExpressionLabel.msg").is_file():
            return candidate
    raise FileNotFoundError(f"clifer .msg files not found in any of: {', '.join(map(str, candidates))}")


@lru_cache(maxsize=1)
def typestore():
    """The KILTED typestore with ``clifer/msg/*`` registered (shared, read-only after creation)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = _clifer_msg_dir()
    types = {}
    for name in CLIFER_MESSAGES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"clifer/msg/{name}"))
    store.register(types)
    return store


def knows_type(msgtype: str) -> bool:
    return msgtype in typestore().fielddefs


def serialize(message, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(message, msgtype))


def storage_for(path: str | os.PathLike, storage: str | None) -> str:
    """The storage plugin name: as asked, else from the suffix (``.db3`` -> sqlite3), else MCAP."""
    if storage is not None:
        if storage not in STORAGE_SUFFIXES:
            raise ValueError(f"unknown bag storage {storage!r}; use one of {', '.join(STORAGE_SUFFIXES)}")
        return storage
    return "sqlite3" if Path(path).suffix == ".db3" else "mcap"


def bag_directory(path: str | os.PathLike) -> Path:
    """The rosbag2 directory for ``path``: ``run.mcap`` and ``run.db3`` name the bag ``run/``.

    rosbag2 bags are directories (``run/metadata.yaml`` + ``run/run.mcap``); users
    naturally type the file name, so both spellings mean the same bag.
    """
    path = Path(path)
    return path.with_suffix("") if path.suffix in STORAGE_SUFFIXES.values() else path


def resolve_bag(path: str | os.PathLike) -> Path:
    """What to open for ``path``: a bag directory, or a bare storage file; raises if neither exists."""
    path = Path(path)
    if path.is_dir() or path.is_file():
        return path
    directory = bag_directory(path)
    if (directory / "metadata.yaml").is_file():
        return directory
    raise BagError(f"{path}: no such bag (looked for {path} and {directory}/metadata.yaml)")


def _is_replaceable_bag(directory: Path) -> bool:
    """Only a folder that holds nothing but a bag may be deleted by --force."""
    return (directory / "metadata.yaml").is_file() and all(
        child.name == "metadata.yaml" or child.suffix in (".mcap", ".db3", ".zstd") for child in directory.iterdir()
    )


@contextmanager
def bag_writer(out: str | os.PathLike, storage: str | None = None, force: bool = False) -> Iterator[Writer]:
    """A rosbag2 version 9 :class:`Writer` for the bag ``out``; the bag appears only when the block succeeds.

    It is written beside the target under a temporary name and renamed into
    place at the end, so an interrupted run leaves any earlier bag untouched.
    MCAP chunks are zstd-compressed (``ros2 bag play`` reads them natively).
    """
    storage = storage_for(out, storage)
    directory = bag_directory(out)
    if directory.exists():
        if not force:
            raise BagError(f"{directory} already exists; pass --force to replace it")
        if not _is_replaceable_bag(directory):
            raise BagError(f"{directory} exists and is not a bag (no metadata.yaml, or other files): not replacing it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    staging = staging_root / directory.name
    writer = Writer(staging, version=9, storage_plugin=StoragePlugin[storage.upper()])
    if storage == "mcap":
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    try:
        with writer:
            yield writer
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


class BagReader:
    """Messages of a rosbag2 bag in time order, with errors that say where the damage is.

    ``topics`` maps topic to message type and ``counts`` topic to message count. :meth:`messages` yields
    :class:`BagMessage` s; :meth:`decode` turns one into a rosbags message object
    (attribute-compatible with rclpy's). Topics whose type this process cannot
    decode are skipped with a warning instead of failing the whole bag.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_bag(path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as error:  # noqa: BLE001 - yaml, sqlite, mcap and OS errors all mean "cannot open this bag"
            raise BagError(f"{self._describe()}: cannot open the bag: {error}{self._truncation_hint()}") from error
        self.topics = {connection.topic: connection.msgtype for connection in self._reader.connections}
        self.counts = {topic: info.msgcount for topic, info in self._reader.topics.items()}
        self.message_count = self._reader.message_count
        self.start_ns = self._reader.start_time
        self.duration_ns = self._reader.duration

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def topics_of_type(self, msgtype: str) -> list[str]:
        return sorted(topic for topic, kind in self.topics.items() if kind == msgtype)

    def offered_qos(self, topic: str) -> list[Qos]:
        """The QoS profiles the recording publisher offered on ``topic`` (empty when the bag does not say)."""
        for connection in self._reader.connections:
            if connection.topic == topic:
                return list(getattr(connection.ext, "offered_qos_profiles", []) or [])
        return []

    def messages(self, topics: list[str] | None = None, decodable_only: bool = True) -> Iterator[BagMessage]:
        """Yield the messages of ``topics`` (all when None) in time order.

        With ``decodable_only`` (for readers that decode), topics of types this
        process's typestore does not know are skipped with a warning; replay,
        which forwards bytes untouched, passes False.
        """
        wanted = set(self.topics) if topics is None else set(topics)
        missing = wanted - set(self.topics)
        if missing:
            raise BagError(f"{self._describe()}: no topic {', '.join(sorted(missing))}; it has {', '.join(sorted(self.topics))}")
        connections = []
        for connection in self._reader.connections:
            if connection.topic not in wanted:
                continue
            if decodable_only and not knows_type(connection.msgtype):
                warnings.warn(f"{self.path}: skipping {connection.topic}: unknown message type {connection.msgtype}", stacklevel=2)
                continue
            connections.append(connection)
        if not connections:
            return
        index, last_ns = 0, None
        stream = self._reader.messages(connections=connections)
        while True:
            try:
                item = next(stream, None)
            except Exception as error:  # noqa: BLE001 - any failure inside the storage layer means a damaged file
                after = f" after message {index - 1} (log time {last_ns} ns)" if index else " before the first message"
                raise BagError(f"{self._describe()}: damaged bag{after}: {type(error).__name__}: {error}") from error
            if item is None:
                return
            connection, timestamp_ns, raw = item
            yield BagMessage(index, connection.topic, connection.msgtype, timestamp_ns, bytes(raw))
            index, last_ns = index + 1, timestamp_ns

    def decode(self, message: BagMessage):
        """Deserialise one message; a payload that does not parse is a :class:`BagError` naming it."""
        try:
            return typestore().deserialize_cdr(message.raw, message.msgtype)
        except Exception as error:  # noqa: BLE001 - the CDR decoder raises many kinds of error on bad bytes
            raise BagError(
                f"{self._describe()}: message {message.index} on {message.topic} (log time {message.timestamp_ns} ns) "
                f"is not a valid {message.msgtype}: {type(error).__name__}: {error}"
            ) from error

    def _storage_files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
        return [self.path]

    def _describe(self) -> str:
        files = self._storage_files()
        return ", ".join(f"{f} ({f.stat().st_size} bytes)" for f in files) if files else str(self.path)

    def _truncation_hint(self) -> str:
        for storage_file in self._storage_files():
            if storage_file.suffix == ".mcap":
                complete_to = mcap_readable_prefix(storage_file)
                size = storage_file.stat().st_size
                if complete_to is not None and complete_to < size:
                    return f" (records are complete up to byte offset {complete_to} of {size}: the file is truncated or damaged there)"
        return ""


def mcap_readable_prefix(path: Path) -> int | None:
    """Byte offset where the last intact top-level MCAP record ends, or None when the whole file parses."""
    from mcap.stream_reader import StreamReader

    with path.open("rb") as stream:
        complete_to = 0
        try:
            for _ in StreamReader(stream, emit_chunks=True).records:
                complete_to = stream.tell()
        except Exception:  # noqa: BLE001 - locating the damage is the point; any parse error marks it
            return complete_to
    return None
