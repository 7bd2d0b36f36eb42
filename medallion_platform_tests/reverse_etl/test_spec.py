"""Sync declarations are checked at definition load: every refusal names the sync and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from medallion_platform.config import ConfigError, platform_config
from medallion_platform.reverse_etl.destinations import destination_names
from medallion_platform.reverse_etl.spec import SYNCS_PATH, SyncSpec, load_syncs


def _raw(**changes: Any) -> dict[str, Any]:
    """The packaged salesforce_contacts sync as YAML data, with ``changes`` applied (``None``
    removes a key; ``mapping`` entries are merged)."""
    document = yaml.safe_load(SYNCS_PATH.read_text())
    raw = next(s for s in document["syncs"] if s["name"] == "salesforce_contacts")
    for key, value in changes.items():
        if key == "mapping":
            raw["mapping"] = {**raw["mapping"], **value}
            raw["mapping"] = {k: v for k, v in raw["mapping"].items() if v is not None}
        elif value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def _load(tmp_path: Path, *raws: dict[str, Any]) -> list[SyncSpec]:
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"syncs": list(raws)}, sort_keys=False))
    return load_syncs(path, config=platform_config())


def _refused(tmp_path: Path, raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, raw)
    message = str(raised.value)
    assert str(tmp_path / "syncs.yaml") in message and raw["name"] in message
    return message


def test_the_packaged_syncs_load_and_read_gold_and_ml() -> None:
    syncs = {s.name: s for s in load_syncs(config=platform_config())}
    assert set(syncs) == {"salesforce_contacts", "hubspot_contacts", "zendesk_users"}
    for spec in syncs.values():
        assert spec.tables == ["gold.customer_360", "gold.dim_customer", "ml.churn_scores"]
    assert syncs["hubspot_contacts"].mode == "mirror"
    assert syncs["salesforce_contacts"].effective_batch_size == 200
    assert syncs["zendesk_users"].mapping["tags"].tags_from == {
        "vip": "lifetime_value >= 2500",
        "churn_risk_high": "risk_band = 'high'",
    }


def test_a_mapping_naming_a_column_the_query_does_not_return(tmp_path) -> None:
    message = _refused(tmp_path, _raw(mapping={"Email": "email_address"}))
    assert "mapping Email <- email_address" in message
    assert "returns no column 'email_address'" in message and "customer_id" in message


def test_a_tag_rule_naming_an_unknown_column(tmp_path) -> None:
    raw = _raw(
        name="zendesk_tags",
        destination="zendesk",
        object="users",
        identity={"column": "customer_id", "field": "external_id"},
        batch_size=100,
        options={"tags": "merge"},
    )
    raw["mapping"] = {"tags": {"tags_from": {"vip": "ltv >= 1000"}}}
    message = _refused(tmp_path, raw)
    assert "mapping tags <- tags_from vip: ltv >= 1000" in message and "'ltv'" in message


def test_zendesk_tags_must_say_whether_agents_tags_are_kept(tmp_path) -> None:
    """A tags list replaces every tag of a Zendesk user, agents' included: a sync mapping tags
    must choose merge or replace (issue 15)."""
    raw = _raw(
        name="zendesk_tags",
        destination="zendesk",
        object="users",
        identity={"column": "customer_id", "field": "external_id"},
        batch_size=100,
    )
    raw["mapping"] = {"tags": {"tags_from": {"vip": "lifetime_value >= 1000"}}}
    message = _refused(tmp_path, raw)
    assert "mapping tags: a tags list replaces all of a Zendesk user's tags" in message
    assert "options.tags: merge" in message
    assert "options" in _refused(tmp_path, raw | {"options": {"tags": "keep"}})
    [spec] = _load(tmp_path, raw | {"options": {"tags": "merge"}})
    assert spec.options == {"tags": "merge"}


def test_a_destination_field_the_destination_does_not_have(tmp_path) -> None:
    message = _refused(tmp_path, _raw(mapping={"Phone__c": "email"}))
    assert "mapping.Phone__c" in message or "mapping Phone__c" in message
    assert "not a salesforce Contact field" in message and "LTV__c" in message


def test_a_type_that_does_not_fit_the_field(tmp_path) -> None:
    # A DATE column into a number field; a string into a date field.
    message = _refused(tmp_path, _raw(mapping={"LTV__c": "last_order_date"}))
    assert "mapping LTV__c <- last_order_date" in message
    assert "the value is date, but salesforce Contact field LTV__c expects number" in message
    message = _refused(tmp_path, _raw(mapping={"Last_Order_Date__c": "segment"}))
    assert "expects date" in message and "(add a transform)" in message


def test_a_transform_that_does_not_apply_to_the_column(tmp_path) -> None:
    message = _refused(
        tmp_path, _raw(mapping={"Segment__c": {"column": "segment", "transform": "round(2)"}})
    )
    assert "mapping Segment__c <- segment | round(2)" in message
    assert "round(2) applies to number values, not string" in message
    message = _refused(
        tmp_path, _raw(mapping={"Segment__c": {"column": "segment", "transform": "titlecase"}})
    )
    assert "unknown transform 'titlecase'" in message


def test_a_default_of_the_wrong_type(tmp_path) -> None:
    message = _refused(
        tmp_path, _raw(mapping={"LTV__c": {"column": "lifetime_value", "default": "zero"}})
    )
    assert "mapping LTV__c" in message and "default 'zero' is string" in message


def test_tags_into_a_field_that_is_not_a_list(tmp_path) -> None:
    message = _refused(tmp_path, _raw(mapping={"Segment__c": {"tags_from": {"vip": "1 = 1"}}}))
    assert "tags_from gives a string list" in message and "Segment__c is string" in message


def test_tag_conditions_are_comparisons_not_arbitrary_sql(tmp_path) -> None:
    for condition, refused in (
        ("lifetime_value >= (SELECT 1)", "SUBQUERY is not allowed"),
        ("read_csv('/etc/passwd') IS NULL", "READCSV is not allowed"),
        ("lifetime_value > 1; DROP TABLE gold.customer_360", "is not allowed"),
        ("vip = gold.customer_360.segment", "without a table prefix"),
    ):
        raw = _raw(mapping={"Segment__c": {"tags_from": {"vip": condition}}})
        message = _refused(tmp_path, raw)
        assert "mapping.Segment__c" in message and refused in message


def test_identity_must_be_a_field_the_destination_matches_by(tmp_path) -> None:
    message = _refused(tmp_path, _raw(identity={"column": "email", "field": "Email"}))
    assert "identity field 'Email'" in message and "Acme_Customer_Id__c" in message
    message = _refused(tmp_path, _raw(mapping={"Acme_Customer_Id__c": "customer_id"}))
    assert "it is the identity field" in message


def test_batch_size_within_the_destination_limit(tmp_path) -> None:
    message = _refused(tmp_path, _raw(batch_size=500))
    assert "batch_size 500 is above salesforce's limit of 200" in message


def test_the_source_is_one_select_over_gold_and_ml(tmp_path) -> None:
    message = _refused(tmp_path, _raw(source="DELETE FROM gold.customer_360"))
    assert "source must be one SELECT statement" in message
    message = _refused(tmp_path, _raw(source="SELECT * FROM silver.customers"))
    assert "must read gold or ml tables" in message
    message = _refused(tmp_path, _raw(source="SELECT 1; SELECT 2"))
    assert "one SELECT" in message
    message = _refused(tmp_path, _raw(source="SELECT customer_id FROM gold.no_such_table"))
    assert "gold.no_such_table, which the platform does not build" in message


def test_unknown_destination_object_and_mode(tmp_path) -> None:
    message = _refused(tmp_path, _raw(destination="marketo"))
    assert "destination: 'marketo' is not a destination" in message
    assert f"(known: {', '.join(destination_names())})" in message and "zendesk" in message
    assert "object 'Lead'" in _refused(tmp_path, _raw(object="Lead"))
    assert "mode" in _refused(tmp_path, _raw(mode="append"))


def test_duplicate_names_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"duplicate syncs names \[.salesforce_contacts.\]"):
        _load(tmp_path, _raw(), _raw())
    path = tmp_path / "broken.yaml"
    path.write_text("syncs: [")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_syncs(path)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot be read as YAML"):
        load_syncs(tmp_path / "missing.yaml")


def test_the_fingerprint_follows_the_mapping_not_its_order_or_prose() -> None:
    base = SyncSpec.model_validate(_raw())
    reordered = SyncSpec.model_validate(
        {**_raw(), "mapping": dict(reversed(list(_raw()["mapping"].items())))}
    )
    reworded = SyncSpec.model_validate(_raw(description="Another description entirely."))
    retyped = SyncSpec.model_validate(
        _raw(mapping={"LTV__c": {"column": "lifetime_value", "transform": "round(0)"}})
    )
    assert base.fingerprint == reordered.fingerprint == reworded.fingerprint
    assert retyped.fingerprint != base.fingerprint


def test_org_fields_are_declared_in_the_sync_not_the_client(tmp_path) -> None:
    """A real org's custom fields need no code change: declared under fields (name -> type,
    identity for an external id), mapped like the standard ones, types checked the same."""
    raw = _raw(name="with_phone", mapping={"Phone__c": "email"})
    assert "declare the org's own fields under fields" in _refused(tmp_path, raw)
    [spec] = _load(tmp_path, raw | {"fields": {**raw["fields"], "Phone__c": "string"}})
    assert spec.writable_fields["Phone__c"].type == "string"
    typed = raw | {"fields": {**raw["fields"], "Phone__c": "number"}}
    assert "expects number" in _refused(tmp_path, typed)
    no_identity = {**raw["fields"], "Acme_Customer_Id__c": "string"}
    message = _refused(tmp_path, raw | {"fields": no_identity})
    assert "identity field 'Acme_Customer_Id__c'" in message and "identity: true" in message
