"""prefect.yaml stays in step with conf/churn.yaml and names what the deployments need."""

from __future__ import annotations

from pathlib import Path

import json

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


def test_schedules_are_valid_for_prefect_deploy_and_say_when_they_run():
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    weekly = deployments()["retrain-weekly"]["schedules"]
    assert [RawScheduleConfig.model_validate(s).slug for s in weekly] == ["mondays-03-00-utc"]
    schedule = _schedule_config_to_deployment_schedule(weekly[0])
    assert schedule["slug"] == "mondays-03-00-utc" and schedule["schedule"].cron == "0 3 * * 1"
    assert schedule["schedule"].timezone == "UTC"
    sensor = deployments()["new-data-sensor"]["schedules"]
    assert [RawScheduleConfig.model_validate(s).slug for s in sensor] == ["every-5-minutes"]
    assert _schedule_config_to_deployment_schedule(sensor[0])["schedule"].interval.total_seconds() == 300


def test_every_deployed_flow_has_a_run_form_prefect_can_show():
    """The run form Prefect builds from each flow's parameter schema (each deployed flow, and
    `tune`): every parameter and config field described, and no config field whose value is a
    `null` type (the form showed 'Property is type "None"' under it)."""
    import importlib

    from prefect.utilities.callables import parameter_schema

    flows = {d["entrypoint"] for d in deployments().values()} | {"flows/tuning.py:tune"}
    assert len(flows) == 5
    for entrypoint in sorted(flows):
        module, function = entrypoint.removesuffix(".py").replace(".py:", ":").split(":")
        flow = getattr(importlib.import_module("mlpipe." + module.replace("/", ".")), function)
        schema = parameter_schema(flow.fn).model_dump()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (entrypoint, name)
        for name, definition in schema.get("definitions", {}).items():
            for field, prop in definition.get("properties", {}).items():
                assert prop.get("description") or "$ref" in prop, (entrypoint, name, field)
                # a null default is what the form showed, as a `null` type it has no input for
                assert not ("default" in prop and prop["default"] is None), (entrypoint, name, field)


def test_the_train_form_explains_model_params_and_tuning_spaces_with_examples():
    from prefect.utilities.callables import parameter_schema

    from mlpipe.core.config import PipelineConfig
    from mlpipe.flows.training import train

    schema = parameter_schema(train.fn).model_dump()
    assert "overwrite its stored result" in schema["properties"]["refresh"]["description"]
    definitions = schema["definitions"]
    assert definitions["SplitConfig"]["properties"]["time_column"]["type"] == "string"
    assert "default" not in definitions["SplitConfig"]["properties"]["time_column"]
    params = definitions["ModelConfig"]["properties"]["params"]["description"]
    spaces = definitions["TuningConfig"]["properties"]["spaces"]["description"]
    for text in (params, spaces):  # the example in each description is a config that loads
        example = json.loads(text[text.index("Example: ") + len("Example: "):])
        section = "model" if text is params else "tuning"
        key = "params" if text is params else "spaces"
        assert getattr(getattr(PipelineConfig.model_validate({section: {key: example}}), section), key)


def test_a_config_with_its_empty_optional_fields_passes_prefects_parameter_check():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from mlpipe.core.config import PipelineConfig
    from mlpipe.flows.training import train

    schema = parameter_schema(train.fn).model_dump()
    config = PipelineConfig().model_dump(mode="json")
    assert config["split"]["time_column"] is None and config["model"]["candidates"] is None
    assert validate({"config": config, "refresh": False}, schema, raise_on_error=False, preprocess=True) == []
    bad = {**config, "split": {**config["split"], "time_column": 3}}
    assert validate({"config": bad}, schema, raise_on_error=False, preprocess=True)


def test_all_six_deployments_have_entrypoints_that_exist():
    found = deployments()
    assert set(found) == {"retrain-weekly", "train-manual", "new-data-sensor", "retrain-on-new-data",
                          "batch-score", "drift-monitor"}
    for deployment in found.values():
        module, function = deployment["entrypoint"].split(":")
        assert f"def {function}(" in (ROOT / module).read_text()
        assert deployment["work_pool"]["name"] == "mlpipe-process"
