"""prefect.yaml stays in step with conf/churn.yaml and names what the deployments need."""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.config import build_config, load_config

ROOT = Path(__file__).resolve().parents[2]


def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_training_deployments_use_conf_churn_yaml():
    expected = load_config(ROOT / "conf" / "churn.yaml")
    for name in ("retrain-weekly", "train-manual", "retrain-on-new-data"):
        assert build_config(deployments()[name]["parameters"]["config"]) == expected, name


def test_retrain_trigger_passes_the_event_uri_and_debounces():
    (trigger,) = deployments()["retrain-on-new-data"]["triggers"]
    assert set(trigger["expect"]) == {"mlpipe.dataset.arrived", "mlpipe.drift.detected"}
    assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1 and trigger["within"] >= 30
    config = trigger["parameters"]["config"]
    assert config["data"]["uri"] == "{{ event.resource.id }}"
    rest = build_config({**config, "data": {**config["data"], "uri": "x.csv"}})
    assert rest == load_config(ROOT / "conf" / "churn.yaml", data_uri="x.csv")


def test_all_six_deployments_have_entrypoints_that_exist():
    found = deployments()
    assert set(found) == {"retrain-weekly", "train-manual", "new-data-sensor", "retrain-on-new-data",
                          "batch-score", "drift-monitor"}
    for deployment in found.values():
        module, function = deployment["entrypoint"].split(":")
        assert f"def {function}(" in (ROOT / module).read_text()
        assert deployment["work_pool"]["name"] == "mlpipe-process"
