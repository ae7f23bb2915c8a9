"""prefect.yaml stays in step with conf/churn.yaml and names what the deployments need."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlpipe.core.config import build_config, load_config

ROOT = Path(__file__).resolve().parents[3]


def deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_training_deployments_use_conf_churn_yaml():
    expected = load_config(ROOT / "conf" / "churn.yaml")
    for name in ("retrain-weekly", "train-manual", "retrain-on-new-data"):
        assert build_config(deployments()[name]["parameters"]["config"]) == expected, name


def test_retrain_triggers_pass_the_prefix_or_the_drifted_uri_and_debounce():
    arrived, drifted = deployments()["retrain-on-new-data"]["triggers"]
    assert arrived["expect"] == ["mlpipe.dataset.arrived"] and drifted["expect"] == ["mlpipe.drift.detected"]
    uris = {"{{ event.resource['mlpipe.prefix'] }}", "{{ event.resource.id }}"}
    assert {arrived["parameters"]["config"]["data"]["uri"], drifted["parameters"]["config"]["data"]["uri"]} == uris
    # a burst under one prefix trains once, on the newest object under the prefix
    assert arrived["parameters"]["config"]["data"]["uri"].startswith("{{ event.resource['mlpipe.prefix']")
    for trigger in (arrived, drifted):
        assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1 and trigger["within"] >= 30
        assert trigger["for_each"] == ["mlpipe.prefix"]
        config = trigger["parameters"]["config"]
        rest = build_config({**config, "data": {**config["data"], "uri": "x.csv"}})
        assert rest == load_config(ROOT / "conf" / "churn.yaml", data_uri="x.csv")


def test_the_prefix_template_renders_from_a_sensor_event():
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from prefect.events.schemas.events import Event

    event = Event(event="mlpipe.dataset.arrived", resource={"prefect.resource.id": "s3://data/in/b.csv",
                                                            "mlpipe.prefix": "s3://data/in/"})
    arrived, _ = deployments()["retrain-on-new-data"]["triggers"]
    template = ImmutableSandboxedEnvironment().from_string(arrived["parameters"]["config"]["data"]["uri"])
    assert template.render(event=event) == "s3://data/in/"


def test_all_six_deployments_have_entrypoints_that_exist():
    found = deployments()
    assert set(found) == {"retrain-weekly", "train-manual", "new-data-sensor", "retrain-on-new-data",
                          "batch-score", "drift-monitor"}
    for deployment in found.values():
        module, function = deployment["entrypoint"].split(":")
        assert f"def {function}(" in (ROOT / module).read_text()
        assert deployment["work_pool"]["name"] == "mlpipe-process"
