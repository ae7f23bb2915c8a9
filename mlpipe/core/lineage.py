"""Lineage of a model version, and keeping secrets out of it (kernel: no Prefect, no MLflow).

`Lineage` is what every registered version records as tags: dataset URI and fingerprint, config
hash, code version, Prefect flow-run id, and the key that makes an identical rerun find the
version it made before. `source_hash` and `code_version` say which code ran; `redact_uri`
drops credentials from any URI before it is logged.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlpipe.core.paths import PACKAGE_ROOT, code_folders

TAG_PREFIX = "mlpipe."
LINEAGE_KEY = TAG_PREFIX + "lineage_key"


@functools.lru_cache(maxsize=4)
def source_hash(root: Path = PACKAGE_ROOT) -> str:
    """Content hash of the pipeline's own code: every `.py` file under mlpipe/, tasks/ and
    flows/ (`code_folders`), subfolders included (named by their path, so a moved file changes
    the hash)."""
    digest = hashlib.sha256()
    for package in code_folders(root):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())  # tasks/x.py and flows/x.py differ
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_version(root: Path = PACKAGE_ROOT) -> str:
    """The git commit (with `-dirty` and the source hash when files changed), else the source hash."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *code_folders(root)],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"src-{source_hash(root)}"
    return f"{commit}-dirty-{source_hash(root)}" if dirty else commit


def redact_uri(uri: str) -> str:
    """Drop credentials from a URI (`postgresql://user:pass@host` -> `postgresql://***@host`)."""
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        uri = urlunsplit((parts.scheme, "***@" + parts.netloc.rpartition("@")[2], parts.path, parts.query,
                          parts.fragment))
    return re.sub(r"(?i)((?:key|secret|token|password|signature)=)[^&]+", r"\1***", uri)


@dataclass(frozen=True)
class Lineage:
    """Where a model came from; written as tags on its run and model version."""

    dataset_uri: str
    dataset_fingerprint: str
    config_hash: str
    code_version: str
    source_hash: str
    flow_run_id: str

    @property
    def key(self) -> str:
        """Same data + config + code = same key = same model version."""
        raw = f"{self.dataset_fingerprint}|{self.config_hash}|{self.source_hash}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def tags(self) -> dict[str, str]:
        return {
            TAG_PREFIX + "dataset_uri": redact_uri(self.dataset_uri),
            TAG_PREFIX + "dataset_fingerprint": self.dataset_fingerprint,
            TAG_PREFIX + "config_hash": self.config_hash,
            TAG_PREFIX + "code_version": self.code_version,
            TAG_PREFIX + "prefect_flow_run_id": self.flow_run_id,
            LINEAGE_KEY: self.key,
        }
