"""Where the data comes from: dataset objects under a prefix (newest first, new since the sensor's
last look) and the data source a run trains on. Prefect-free."""

from __future__ import annotations

from dataclasses import dataclass

from mlpipe.core.config import DataConfig
from mlpipe.core.errors import DatasetError
from mlpipe.data.reader import filesystem, fingerprint_dataset


@dataclass(frozen=True)
class ArrivedObject:
    """A dataset object found under a watched prefix."""

    uri: str
    fingerprint: str
    size: int
    rows: int


def _dataset_entries(prefix: str, patterns: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(URI, fsspec listing entry) of the dataset objects directly under `prefix`."""
    import fnmatch

    fs, path = filesystem(prefix)
    fs.invalidate_cache()  # a sensor must see objects written since its last look
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    protocol = prefix.split("://", 1)[0] + "://" if "://" in prefix else ""
    found = []
    for entry in entries:
        name = entry["name"]
        if entry.get("type") != "file" or not any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns):
            continue
        found.append((protocol + name if protocol and not name.startswith(protocol) else name, entry))
    return found


def list_datasets(prefix: str, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> dict[str, tuple[str, int]]:
    """Dataset objects directly under `prefix`: URI -> (fingerprint, size). S3 objects are
    identified by ETag (no download); local files by a content hash."""
    return {uri: (fingerprint_dataset(uri).value, int(entry.get("size") or 0))
            for uri, entry in _dataset_entries(prefix, patterns)}


def _modified(entry: dict) -> float:
    stamp = entry.get("LastModified") or entry.get("mtime") or entry.get("last_modified") or 0
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


def datasets_newest_first(prefix: str, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> list[str]:
    """The dataset objects under `prefix`, most recently modified first (ties: the later name
    first, so snapshots named by date sort right even when uploaded in the same second)."""
    entries = _dataset_entries(prefix, patterns)
    return [uri for uri, _ in sorted(entries, key=lambda item: (_modified(item[1]), item[0]), reverse=True)]


@dataclass(frozen=True)
class DataSource:
    """The data a run trains on. When `data.uri` names a prefix (ends with `/`), the newest
    object under it, and the older ones it supersedes (named, so none is dropped silently)."""

    data: DataConfig
    prefix: str | None = None
    superseded: tuple[str, ...] = ()

    def tags(self) -> dict[str, str]:
        if self.prefix is None:
            return {}
        names = [uri.rsplit("/", 1)[-1] for uri in self.superseded]
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return {"mlpipe.dataset_prefix": self.prefix, "mlpipe.dataset_superseded": listed or "none"}


def resolve_data_source(data: DataConfig, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> DataSource:
    """`data` as it is, or, for a prefix URI (ending in `/`), with the newest dataset object under
    it: each object under a prefix is a snapshot of the whole table (e.g. this week's export),
    so a burst of uploads trains once, on the latest, and the older ones are recorded as
    superseded."""
    if not data.uri.endswith("/"):
        return DataSource(data)
    found = datasets_newest_first(data.uri, patterns)
    if not found:
        raise DatasetError(f"no dataset objects ({', '.join(patterns)}) under {data.uri}")
    return DataSource(data.model_copy(update={"uri": found[0]}), data.uri, tuple(found[1:]))


def new_objects(listed: dict[str, tuple[str, int]], seen: dict[str, str]) -> list[tuple[str, str, int]]:
    """Objects not seen before, or seen with another fingerprint (rewritten in place)."""
    return [(uri, fp, size) for uri, (fp, size) in sorted(listed.items()) if seen.get(uri) != fp]

