"""models.py: what a config row must look like to become a DAG."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from customer_pipelines import models
from customer_pipelines.models import ConfigError, PipelineConfig, parse_config, parse_config_json


def _row(**overrides: Any) -> dict[str, Any]:
    row = {
        "config_id": "cfg_1",
        "customer_id": "cust_a",
        "provider": "GCP",
        "domain": "COST",
        "pipeline_template": "cost_billing",
        "schedule_cron": "0 2 * * *",
        "timezone": "UTC",
        "priority": 5,
    }
    row.update(overrides)
    return row


def test_every_demo_config_parses_into_a_pipeline_config(demo_configs):
    parsed = [parse_config(row) for row in demo_configs]
    assert all(isinstance(p, PipelineConfig) for p in parsed), [p for p in parsed if isinstance(p, ConfigError)]
    assert [p.dag_id for p in parsed] == [f"{r['customer_id']}.{r['config_id']}" for r in demo_configs]


def test_dag_id_and_pool_name_are_built_from_the_ids():
    assert models.dag_id_for("cust_a", "cfg_1") == "cust_a.cfg_1"
    assert models.pool_name_for("cust_a") == "cp_cust_a"
    assert models.pool_name_for("cust_a", prefix="tenant-") == "tenant-cust_a"


def test_cron_whitespace_is_normalised_to_single_spaces():
    parsed = parse_config(_row(schedule_cron="  0   2 *\t* *  "))
    assert isinstance(parsed, PipelineConfig)
    assert parsed.schedule_cron == "0 2 * * *"


@pytest.mark.parametrize(
    ("cron", "stored"),
    [
        ("@hourly", "@hourly"),
        ("@daily", "@daily"),
        ("@midnight", "@daily"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@annually", "@yearly"),
        (" @Daily\t", "@daily"),
    ],
)
def test_cron_alias_is_accepted_under_airflows_preset_name(cron, stored):
    parsed = parse_config(_row(schedule_cron=cron))
    assert isinstance(parsed, PipelineConfig), parsed
    assert parsed.schedule_cron == stored


@pytest.mark.parametrize(
    "cron",
    [
        "@reboot",  # croniter: not an iterator expression; it never fires on a schedule
        "@quarterly",  # Airflow has it, croniter (the sync's next ticks) does not
        "@every 5m",
        "@daily 0",
        "@",
        "0 0 * * * *",  # a seconds field (croniter reads six fields as seconds-last)
        "0 0 1 1 * 2030",  # seven fields: a year
        "0 0 1 1 * 0 2030",
        "0 0 30 2 *",  # valid syntax, never fires
    ],
)
def test_cron_that_is_no_5_field_expression_nor_a_firing_alias_is_refused_naming_the_field(cron):
    parsed = parse_config(_row(schedule_cron=cron))
    assert isinstance(parsed, ConfigError), cron
    assert parsed.reason.startswith("schedule_cron: "), parsed.reason


def test_an_unknown_alias_is_refused_with_the_aliases_that_exist():
    parsed = parse_config(_row(schedule_cron="@quarterly"))
    assert isinstance(parsed, ConfigError)
    assert "@quarterly" in parsed.reason
    assert all(alias in parsed.reason for alias in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly"))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"schedule_cron": "61 * * * *"}, "schedule_cron"),
        ({"schedule_cron": "@reboot"}, "schedule_cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"priority": 0}, "priority"),
        ({"retry_config": {"max_attempts": 0}}, "retry_config"),
        ({"retry_config": {"max_attempts": 3, "surprise": 1}}, "retry_config"),
        ({"parameters": "{not json"}, "parameters"),
        ({"parameters": {"currency": "usd"}}, "parameters"),
        ({"pipeline_template": "compliance_report", "domain": "COMPLIANCE", "provider": "OPENAI"}, "pipeline_template"),
    ],
    ids=[
        "minute-61",
        "cron-reboot",
        "unknown-tz",
        "tz-path",
        "priority-0",
        "zero-attempts",
        "unknown-retry-key",
        "broken-json-text",
        "lowercase-currency",
        "provider-not-served-by-template",
    ],
)
def test_invalid_row_becomes_a_config_error_naming_the_field(overrides, field):
    parsed = parse_config(_row(**overrides))
    assert isinstance(parsed, ConfigError)
    assert field in parsed.reason
    assert parsed.config_id == "cfg_1"
    assert parsed.customer_id == "cust_a"


JSON_ROWS = {
    "valid": _row(
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),
        parameters={"lookback_days": 3},
        retry_config='{"max_attempts": 5}',
        display_name=None,
        auto_backfill_ticks=None,
    ),
    "valid-alias": _row(schedule_cron="@midnight", timezone="Europe/Berlin", is_active=False),
    "minute-61": _row(schedule_cron="61 * * * *"),
    "unknown-tz": _row(timezone="Mars/Olympus"),
    "priority-text": _row(priority="high"),
    "broken-json-text": _row(parameters="{not json"),
    "missing-config-id": {k: v for k, v in _row().items() if k != "config_id"},
    "too-deep": _row(parameters=json.loads('{"a": ' * 12 + "1" + "}" * 12)),
}


@pytest.mark.parametrize("name", list(JSON_ROWS))
def test_a_row_read_as_json_text_parses_exactly_as_the_decoded_row(name):
    row = JSON_ROWS[name]
    assert parse_config_json(json.dumps(row)) == parse_config(row)


@pytest.mark.parametrize(("payload", "reason"), [("{not json", "row: not JSON"), ("[1, 2]", "row: not a JSON object")])
def test_a_snapshot_row_that_is_not_a_json_object_is_a_config_error_saying_so(payload, reason):
    parsed = parse_config_json(payload)
    assert isinstance(parsed, ConfigError)
    assert parsed.reason.startswith(reason)


def test_json_columns_arriving_as_text_are_decoded():
    parsed = parse_config(
        _row(parameters='{"lookback_days": 3}', retry_config='{"max_attempts": 5, "base_delay_minutes": 1}')
    )
    assert isinstance(parsed, PipelineConfig)
    assert parsed.parameters == {"lookback_days": 3}
    assert parsed.retry_config.max_attempts == 5
    assert parsed.retry_config.base_delay_minutes == 1


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_json_columns_mean_template_defaults(empty):
    parsed = parse_config(_row(parameters=empty, retry_config=empty))
    assert isinstance(parsed, PipelineConfig)
    assert parsed.parameters == {}
    assert parsed.retry_config == models.RetryConfig()


def test_json_null_text_means_template_defaults():
    parsed = parse_config(_row(parameters="null", retry_config="null"))
    assert isinstance(parsed, PipelineConfig), parsed


@pytest.mark.parametrize("name", ["localtime", "right/UTC", "posix/Europe/Berlin", "posixrules"])
def test_host_specific_zoneinfo_files_are_not_accepted_as_timezones(name):
    parsed = parse_config(_row(timezone=name))
    assert isinstance(parsed, ConfigError)
    assert "timezone" in parsed.reason


@pytest.mark.parametrize("name", ["America", "zone.tab", "tzdata.zi", "/usr/share/zoneinfo/UTC", "Europe/../UTC", ""])
def test_directories_and_other_files_of_the_zone_database_are_not_timezones(name):
    parsed = parse_config(_row(timezone=name))
    assert isinstance(parsed, ConfigError)
    assert "timezone" in parsed.reason


def test_every_zone_of_the_database_is_accepted_and_its_host_specific_files_are_not():
    from zoneinfo import available_timezones

    listed = available_timezones()
    accepted = {name for name in listed if models.is_iana_timezone(name)}
    assert {"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"} <= accepted
    assert listed - accepted == {n for n in listed if n.startswith(("right/", "posix/")) or n in models._NOT_ZONES}


def test_hostile_config_id_is_printed_quoted_and_truncated():
    hostile = "x'; DROP TABLE customers;--" + "y" * 100
    parsed = parse_config(_row(config_id=hostile))
    assert isinstance(parsed, ConfigError)
    assert "config_id" in parsed.reason
    shown = str(parsed).removeprefix("config ").split(" (customer ")[0]
    assert shown.startswith("\"x'; DROP") and shown.endswith('"...(+67 more characters)')
    assert len(shown) < 90


def test_missing_config_id_is_reported_as_missing():
    row = _row()
    del row["config_id"]
    parsed = parse_config(row)
    assert isinstance(parsed, ConfigError)
    assert parsed.config_id is None
    assert str(parsed).startswith("config <missing> ")
    assert "config_id" in parsed.reason


def test_customer_with_unknown_status_is_rejected_and_active_flag_follows_status():
    assert models.Customer(customer_id="cust_a", status="ACTIVE").is_active
    assert not models.Customer(customer_id="cust_a", status="SUSPENDED").is_active
    with pytest.raises(ValueError, match="status"):
        models.Customer(customer_id="cust_a", status="DELETED")


# -- bad rows print as one readable line --------------------------------------------------------

HOSTILE_TEXTS = {
    "newline": "evil\nsecond line",
    "tab": "evil\tcolumn",
    "ansi": "\x1b[31mevil\x1b[0m",
    "carriage-return": "evil\rFAKE OK",
    "line-separator": "evil\u2028next",
    "1mb": "e" + "x" * 1_000_000,
}


def one_readable_line(text: str, limit: int = 2_000) -> bool:
    """No control character (newline, tab, escape, Unicode line separators...) and a bounded length."""
    return text.isprintable() and len(text) <= limit


@pytest.mark.parametrize("field", ["config_id", "customer_id", "timezone", "pipeline_template", "schedule_cron"])
@pytest.mark.parametrize("hostile", list(HOSTILE_TEXTS.values()), ids=list(HOSTILE_TEXTS))
def test_a_hostile_value_is_printed_escaped_and_cut_on_one_line(field, hostile):
    parsed = parse_config(_row(**{field: hostile}))
    assert isinstance(parsed, ConfigError)
    text = str(parsed)
    assert one_readable_line(text), text[:300]
    assert field in parsed.reason
    assert "evil" in text or "ex" in text  # the value is shown, escaped, not dropped
    if len(hostile) > 1000:
        assert "more characters" in text


def test_hostile_ids_and_values_in_one_row_still_make_one_line_naming_each_escaped():
    parsed = parse_config(
        _row(
            config_id="cfg\n1",
            customer_id="cust\x1b[2J",
            timezone="UTC\tX",
            parameters={"key\nwith newline": 1},
            display_name="d" * 1_000_000,
        )
    )
    assert isinstance(parsed, ConfigError)
    text = str(parsed)
    assert one_readable_line(text), text[:300]
    assert text.startswith("config 'cfg\\n1' (customer 'cust\\x1b[2J'): ")
    assert parsed.config_id == "cfg\n1", "the error keeps the raw id; only its text is escaped"


def test_a_plain_id_is_printed_as_it_is_and_a_missing_one_as_missing():
    assert (
        str(ConfigError(config_id="cfg_1", customer_id="cust_a", reason="x: y"))
        == "config cfg_1 (customer cust_a): x: y"
    )
    row = _row(timezone="Mars/Olympus")
    del row["config_id"]
    assert str(parse_config(row)).startswith("config <missing> (customer cust_a): ")


def test_a_reason_with_control_characters_is_one_line():
    error = ConfigError(config_id="cfg_1", customer_id=None, reason="dag: boom\nTraceback\x1b[0m" + "z" * 100_000)
    assert one_readable_line(str(error))
    assert "boom\\nTraceback\\x1b[0m" in str(error)


def test_nullable_columns_left_null_still_make_a_valid_config():
    parsed = parse_config(
        _row(
            display_name=None,
            parameters=None,
            retry_config=None,
            max_execution_duration_minutes=None,
            sla_breach_threshold_minutes=None,
        )
    )
    assert isinstance(parsed, PipelineConfig), parsed
    assert parsed.display_name == ""


NO_SUBSCRIPTION_ROW = {
    # what snapshot_customers.sql gives for a customer whose subscription lapsed (LEFT JOIN: NULLs)
    "customer_id": "cust_a",
    "company_name": "A",
    "status": "ACTIVE",
    "plan": None,
    "daily_run_limit": None,
    "monthly_run_limit": None,
    "max_concurrent_runs": None,
}


def test_a_customer_without_a_subscription_in_force_is_valid_and_has_no_subscription():
    customer = models.Customer.model_validate(NO_SUBSCRIPTION_ROW)
    assert customer.is_active
    assert not customer.has_subscription
    subscribed = models.Customer.model_validate({**NO_SUBSCRIPTION_ROW, "plan": "STARTER", "max_concurrent_runs": 2})
    assert subscribed.has_subscription


def test_a_plan_without_its_max_concurrent_runs_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="max_concurrent_runs"):
        models.Customer.model_validate({**NO_SUBSCRIPTION_ROW, "plan": "STARTER"})


@pytest.mark.parametrize(
    ("config_active", "customer_row", "reason"),
    [
        (True, {"plan": "STARTER", "max_concurrent_runs": 2}, None),
        (False, {"plan": "STARTER", "max_concurrent_runs": 2}, "CONFIG_INACTIVE"),
        (None, {"plan": "STARTER", "max_concurrent_runs": 2}, "CONFIG_INACTIVE"),  # deleted: not in the snapshot
        (True, {"status": "SUSPENDED", "plan": "STARTER", "max_concurrent_runs": 2}, "CUSTOMER_INACTIVE"),
        (True, None, "CUSTOMER_INACTIVE"),  # no such customer
        (True, {}, "NO_SUBSCRIPTION"),
        (True, {"status": "CHURNED"}, "CUSTOMER_INACTIVE"),  # churned and lapsed: the status says more
        (False, {}, "CONFIG_INACTIVE"),
    ],
)
def test_hold_reason_says_why_a_config_may_not_run(config_active, customer_row, reason):
    config = None if config_active is None else parse_config(_row(is_active=config_active))
    customer = None if customer_row is None else models.Customer.model_validate({**NO_SUBSCRIPTION_ROW, **customer_row})
    assert models.hold_reason(config, customer) == reason


# -- bounds: what one row may cost is bounded before anything parses it (issue #19) ---------------


def _cron_of_length(length: int) -> str:
    """A valid cron of exactly ``length`` characters: a minute list, the other fields '*'."""
    minutes = ",".join(str(m) for m in range(60))[: length - len(" * * * *")].rstrip(",")
    return f"{minutes} * * * *".ljust(length)  # trailing blanks are normalised away, not refused


@pytest.mark.parametrize(
    ("field", "at_most", "valid_at_the_limit"),
    [
        ("config_id", 128, "c" * 128),
        ("customer_id", 63, "c" * 63),
        ("display_name", 200, "n" * 200),
        ("schedule_cron", 128, _cron_of_length(128)),
        ("timezone", 64, None),  # no IANA name is that long: at 64 the zone lookup refuses it instead
        ("pipeline_template", 64, None),  # likewise the template registry
    ],
)
def test_a_string_field_over_its_maximum_is_refused_as_too_long_and_at_its_maximum_reaches_its_own_check(
    field, at_most, valid_at_the_limit
):
    assert models.MAX_LENGTHS[field] == at_most
    over = parse_config(_row(**{field: "x" * (at_most + 1)}))
    assert isinstance(over, ConfigError)
    assert over.reason.startswith(f"{field}: too long: {at_most + 1} characters (at most {at_most}): "), over.reason
    at_limit = parse_config(_row(**{field: valid_at_the_limit or "x" * at_most}))
    if valid_at_the_limit is None:
        assert isinstance(at_limit, ConfigError)
        assert at_limit.reason.startswith(f"{field}: ") and "too long" not in at_limit.reason, at_limit.reason
    else:
        assert isinstance(at_limit, PipelineConfig), at_limit


def test_a_cron_at_its_maximum_length_is_kept_whole_and_normalised():
    cron = _cron_of_length(models.MAX_LENGTHS["schedule_cron"])
    parsed = parse_config(_row(schedule_cron=cron))
    assert isinstance(parsed, PipelineConfig), parsed
    assert parsed.schedule_cron == cron.strip()


@pytest.mark.parametrize(("field", "value"), [("config_id", "cfg_1\n"), ("customer_id", "cust_a\n")])
def test_an_id_with_a_trailing_newline_is_refused_and_the_same_id_without_it_accepted(field, value):
    refused = parse_config(_row(**{field: value}))
    assert isinstance(refused, ConfigError)
    assert refused.reason.startswith(f"{field}: must be 1-"), refused.reason
    assert isinstance(parse_config(_row(**{field: value.rstrip()})), PipelineConfig)


def _padded_json(text: str, length: int) -> str:
    """``text`` (a JSON object) padded with blanks inside its braces to exactly ``length`` characters."""
    return text[:-1] + " " * (length - len(text)) + "}"


@pytest.mark.parametrize("field", ["parameters", "retry_config"])
def test_a_json_column_over_its_size_is_refused_before_parsing_and_at_its_size_is_parsed(field):
    limit = models.JSON_MAX_CHARS
    valid = {"parameters": '{"currency": "EUR"}', "retry_config": '{"max_attempts": 4}'}[field]
    at_limit = parse_config(_row(**{field: _padded_json(valid, limit)}))
    assert isinstance(at_limit, PipelineConfig), at_limit
    over = parse_config(_row(**{field: _padded_json(valid, limit + 1)}))
    assert isinstance(over, ConfigError)
    assert over.reason == f"{field}: too large: {limit + 1:,} characters of JSON (at most {limit:,})"


def _nested_text(depth: int) -> str:
    """An object whose key ``currency`` holds arrays nested to ``depth`` levels in all."""
    return '{"currency": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def _nested_value(depth: int) -> dict[str, Any]:
    inner: Any = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"currency": inner}


@pytest.mark.parametrize("nested", [_nested_text, _nested_value], ids=["json-text", "decoded"])
def test_parameters_nested_past_the_depth_limit_are_refused_and_at_the_limit_reach_the_templates_check(nested):
    at_limit = parse_config(_row(parameters=nested(models.JSON_MAX_DEPTH)))
    assert isinstance(at_limit, ConfigError)
    assert "currency" in at_limit.reason and "nested" not in at_limit.reason, at_limit.reason  # the template's check
    deeper = parse_config(_row(parameters=nested(models.JSON_MAX_DEPTH + 1)))
    assert isinstance(deeper, ConfigError)
    assert deeper.reason == f"parameters: nested deeper than {models.JSON_MAX_DEPTH} levels", deeper.reason


@pytest.mark.parametrize(
    "text",
    [
        '{"currency": "[[[[[[[[[[[[{{{{{{{{{{{{"}',  # brackets inside a string are no nesting
        '{"currency": "\\"[[[[[[[[[[[[[[\\""}',  # nor after an escaped quote
    ],
)
def test_brackets_inside_json_strings_do_not_count_as_nesting(text):
    parsed = parse_config(_row(parameters=text))
    assert isinstance(parsed, ConfigError)
    assert parsed.reason.startswith("parameters: currency: String should match pattern"), parsed.reason


def test_parameters_nested_deeper_than_json_loads_can_recurse_are_one_config_error_not_a_recursion_error():
    parsed = parse_config(_row(parameters="[" * 5_000 + "]" * 5_000))  # 10,000 characters, within the size
    assert isinstance(parsed, ConfigError)
    assert parsed.reason == f"parameters: nested deeper than {models.JSON_MAX_DEPTH} levels"


def test_decoded_parameters_too_large_are_refused_without_walking_all_of_them():
    parsed = parse_config(_row(parameters={f"key_{i}": i for i in range(100_000)}))
    assert isinstance(parsed, ConfigError)
    assert parsed.reason == f"parameters: too large: over {models.JSON_MAX_CHARS:,} characters as JSON"


def test_a_row_whose_validation_raises_anyway_is_one_config_error_naming_the_exception(monkeypatch):
    def overflowing(text: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(models, "json", SimpleNamespace(loads=overflowing))
    parsed = parse_config(_row(parameters='{"currency": "EUR"}'))
    assert isinstance(parsed, ConfigError)
    assert parsed.reason == "row: cannot be validated: RecursionError: maximum recursion depth exceeded"
    assert isinstance(parse_config(_row(parameters={"currency": "EUR"})), PipelineConfig), "the same, decoded"


@pytest.mark.parametrize(("field", "at_most"), [("customer_id", 63), ("company_name", 200)])
def test_a_customer_field_over_its_maximum_is_refused_as_too_long_and_at_it_accepted(field, at_most):
    row = {**NO_SUBSCRIPTION_ROW, field: "c" * at_most}
    assert models.Customer.model_validate(row).model_dump()[field] == "c" * at_most
    with pytest.raises(ValueError, match=f"{field}\n.*too long: {at_most + 1:,} characters \\(at most {at_most}\\)"):
        models.Customer.model_validate({**row, field: "c" * (at_most + 1)})


def test_the_largest_flat_object_that_skips_the_walk_is_within_the_json_bounds():
    largest = {f"{i:02d}" + "k" * 254: -1.2345678901234567e-300 for i in range(32)}
    assert models._is_small_flat_object(largest)
    assert len(json.dumps(largest)) <= models.JSON_MAX_CHARS
    assert models.json_value_problem(largest) is None
    assert not models._is_small_flat_object({**largest, "one more": 1})
    assert not models._is_small_flat_object({"nested": {}})
    assert not models._is_small_flat_object({"text": "x"})
