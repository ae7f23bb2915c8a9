"""The driver of a streamed fit, as its own process (so its peak RSS is the fit's alone):
`python streamed_driver.py CONFIG_JSON` joins the Ray cluster at RAY_ADDRESS, runs
`mlpipe.stages.streamed.fit_streamed` and prints one JSON line: the holdout's roc_auc, its rows,
the process's peak RSS (bytes, VmHWM), the seconds the fit took and the cluster's live nodes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, the high-water mark of its own address space.
    Not getrusage's ru_maxrss, which keeps the parent's RSS from the fork before exec (a test
    process holding a table would count as this driver's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(config_json: str) -> None:
    from sklearn.metrics import roc_auc_score

    from mlpipe.adapters import ray_cluster
    from mlpipe.core.config import PipelineConfig
    from mlpipe.stages.streamed import fit_streamed

    config = PipelineConfig.model_validate(json.loads(config_json))
    started = time.perf_counter()
    fitted = fit_streamed(config)
    seconds = time.perf_counter() - started
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    ray_cluster.shutdown()
    print(json.dumps({"nodes": nodes, "roc_auc": float(roc_auc_score(fitted.labels, fitted.scores)),
                      "holdout_rows": len(fitted.labels), "seconds": seconds,
                      "peak_rss": peak_rss(),
                      "sample_rows": len(fitted.train_sample)}))


if __name__ == "__main__":
    main(sys.argv[1])
