"""Scoring without MongoDB: lead features, the heuristic prior, the registry, training and
promotion of lead models, scoring with the promoted model, and labelled-table preparation."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.lead import Address, CompanyFacts, Email, Enrichment, GeoPoint, Lead, SourceRecord
from models.scoring import (
    FEATURE_NAMES,
    HEURISTIC_VERSION,
    LEAD_FEATURES,
    LEAD_SCHEMA_HASH,
    ModelRegistry,
    TrainingDataError,
    binary_labels,
    feature_schema,
    heuristic_scores,
    lead_features,
    mask_placeholders,
    read_labelled_table,
    read_outcomes,
    schema_hash,
    score_leads,
    train_lead_model,
)
from tasks.score import score

VERSION_PATTERN = re.compile(r"^(leads|table)-\d{8}T\d{6}-[0-9a-f]{6}$")
# Restaurants are the most common trade, as in the directory: the typical lead is a restaurant.
CATEGORIES = ("dentist", "restaurant", "plumber", "restaurant", "salon", "restaurant")


def make_lead(index: int = 0, **fields: object) -> Lead:
    """A complete directory listing; `fields` override any part of it."""
    values: dict[str, object] = {
        "lead_id": f"lead-{index:04d}",
        "name": f"Business {index}",
        "category": "dentist",
        "address": Address(full=f"{index} Main Street, Austin, TX", city="Austin"),
        "location": GeoPoint(coordinates=(-97.74, 30.27)),
        "phone": f"+1512555{index:04d}",
        "website": f"http://business{index}.test",
        "rating": 4.5,
        "review_count": 40,
        "open_hours": {"Monday": ["9 AM-5 PM"]},
        "business_status": "OPERATIONAL",
        "sources": [SourceRecord(source="directory", source_id=str(index))],
    }
    values.update(fields)
    return Lead.model_validate(values)


def verified(address: str = "info@business.test") -> dict[str, object]:
    return {
        "emails": [Email(value=address, source="hunter", status="valid")],
        "best_email": address,
    }


def training_leads(count: int = 80, seed: int = 1) -> list[Lead]:
    """Leads of four trades with varied contact data; the trade is independent of the rest."""
    rng = np.random.default_rng(seed)
    return [
        make_lead(
            i,
            category=CATEGORIES[i % len(CATEGORIES)],
            website=f"http://business{i}.test" if rng.random() < 0.7 else None,
            rating=round(float(rng.uniform(3.0, 5.0)), 1),
            review_count=int(rng.integers(0, 300)),
            **(verified(f"info@business{i}.test") if rng.random() < 0.3 else {}),
        )
        for i in range(count)
    ]


# --- features -------------------------------------------------------------------------------


def test_features_of_a_full_lead_and_a_bare_one() -> None:
    full = make_lead(
        emails=[
            Email(value="sales@business.test", source="website", status="unverified"),
            Email(value="info@business.test", source="hunter", status="valid"),
        ],
        best_email="info@business.test",
        enrichment=Enrichment(company_facts=CompanyFacts(provider="clearbit", employees=51)),
        sources=[SourceRecord(source="directory", source_id="1")] * 2,
    )
    bare = Lead(name="Unknown Business", phone_raw="call us")
    frame = lead_features([full, bare])

    assert list(frame.columns) == list(FEATURE_NAMES)
    first = frame.iloc[0]
    assert first["completeness"] == 1.0
    assert (first["has_phone"], first["has_website"], first["has_email"]) == (1.0, 1.0, 1.0)
    assert first["email_status"] == "valid"  # the best email's status, not the first one's
    assert (first["rating"], first["review_count"]) == (4.5, 40.0)
    assert first["log_review_count"] == pytest.approx(math.log(41))
    assert (first["category"], first["business_status"]) == ("dentist", "operational")
    assert first["company_employees"] == 51.0
    assert first["log_company_employees"] == pytest.approx(math.log(52))
    assert (first["source_count"], first["has_open_hours"]) == (2.0, 1.0)

    second = frame.iloc[1]
    assert second["completeness"] == 0.0  # an unparseable phone is not a phone
    assert (second["has_phone"], second["has_email"], second["email_status"]) == (0.0, 0.0, "none")
    assert second["category"] == "other"
    for missing in ("rating", "review_count", "business_status", "company_employees"):
        assert second[missing] != second[missing], missing  # NaN


def test_feature_schema_hash_is_pinned_and_follows_names_and_kinds() -> None:
    # Changing the schema on purpose means updating this value: models trained on the old
    # schema then stop scoring, as they must.
    assert schema_hash(feature_schema()) == LEAD_SCHEMA_HASH
    assert LEAD_SCHEMA_HASH == "eb36fb58925d4c43ca73c5bdc9f50193c684402e90605514f6738943c018cee5"
    changed = feature_schema()
    changed[0] = {"name": changed[0]["name"], "kind": "categorical"}
    assert schema_hash(changed) != LEAD_SCHEMA_HASH
    assert [f["name"] for f in feature_schema()] == [f.name for f in LEAD_FEATURES]


# --- heuristic prior ------------------------------------------------------------------------


def test_heuristic_ranks_contactable_reputable_open_businesses_higher() -> None:
    leads = {
        "verified email": make_lead(**verified()),
        "no email": make_lead(),
        "invalid email": make_lead(
            emails=[Email(value="x@business.test", source="hunter", status="invalid")],
            best_email="x@business.test",
        ),
        "no website": make_lead(website=None),
        "great reviews": make_lead(rating=4.8, review_count=230),
        "poor reviews": make_lead(rating=2.1, review_count=230),
        "closed": make_lead(business_status="CLOSED_PERMANENTLY"),
        "big company": make_lead(
            enrichment=Enrichment(company_facts=CompanyFacts(provider="clearbit", employees=500))
        ),
    }
    scores, reasons = heuristic_scores(lead_features(list(leads.values())))
    by_name = dict(zip(leads, scores, strict=True))
    why = dict(zip(leads, reasons, strict=True))

    assert by_name["verified email"] > by_name["no email"] > by_name["invalid email"]
    assert by_name["no email"] > by_name["no website"]
    assert by_name["great reviews"] > by_name["no email"] > by_name["poor reviews"]
    assert by_name["big company"] > by_name["no email"]
    assert by_name["closed"] == min(scores)
    assert all(0 <= s <= 100 for s in scores)

    assert why["verified email"][0] == "verified email"
    assert "4.8 rating from 230 reviews" in why["great reviews"]
    assert "no website" in why["no website"]
    assert why["closed"][0] == "permanently closed"
    assert all(1 <= len(r) <= 3 for r in reasons)


def test_score_leads_without_a_promoted_model_uses_the_heuristic(tmp_path: Path) -> None:
    leads = [make_lead(**verified()), make_lead(1, website=None)]
    version = score(leads, ModelRegistry(tmp_path / "models"))
    assert version == HEURISTIC_VERSION
    for lead in leads:
        assert lead.score is not None
        assert lead.score.model_version == HEURISTIC_VERSION
        assert 0 <= lead.score.value <= 100 and lead.score.reasons
    assert leads[0].score.value > leads[1].score.value  # type: ignore[union-attr]


# --- registry, training and promotion -------------------------------------------------------


def test_registry_saves_versioned_folders_and_promotes_only_lead_models(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions() == [] and registry.promoted() is None
    info = registry.save(
        "table",
        {"pipeline": "fitted pipeline stands here"},
        {"feature_schema_hash": "f" * 64, "metrics": {"cv_roc_auc": 0.7}},
        fingerprint="data-1",
    )
    assert VERSION_PATTERN.match(info.version) and info.version.startswith("table-")
    assert sorted(p.name for p in info.path.iterdir()) == ["metadata.json", "model.joblib"]
    metadata = json.loads((info.path / "metadata.json").read_text())
    assert metadata["kind"] == "table" and metadata["created_at"]
    artifact, loaded = registry.load(info.version)
    assert artifact == {"pipeline": "fitted pipeline stands here"}
    assert loaded.metadata == metadata
    # Same data, saved again at once: a new version, never an overwrite.
    again = registry.save("table", {}, {"feature_schema_hash": "f" * 64}, fingerprint="data-1")
    assert again.version != info.version
    assert [v.version for v in registry.versions("table")] == [info.version, again.version]
    with pytest.raises(ValueError, match="only leads models score leads"):
        registry.promote(info.version, "because")
    assert not list((tmp_path / "models").glob(".*"))  # no staging folders or temp files left


def test_train_promotes_only_when_better_and_scoring_uses_the_promoted_model(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    leads = training_leads()
    # Dentists buy. The heuristic knows nothing of trades; a model can learn it.
    labels = [int(lead.category == "dentist") for lead in leads]
    first = train_lead_model(leads, labels, registry, source="outcomes.csv")

    assert first.promoted, first.decision
    assert first.incumbent_version == HEURISTIC_VERSION
    assert first.metrics.roc_auc > first.heuristic.roc_auc
    assert first.decision.startswith("promoted: CV ROC AUC")
    promoted = registry.promoted()
    assert promoted is not None and promoted.version == first.info.version
    metadata = promoted.metadata
    assert VERSION_PATTERN.match(promoted.version) and metadata["kind"] == "leads"
    assert metadata["feature_schema_hash"] == LEAD_SCHEMA_HASH
    assert metadata["feature_schema"] == feature_schema()
    assert (metadata["training_rows"], metadata["positives"]) == (80, sum(labels))
    assert metadata["label"] == "outcome" and metadata["excluded_columns"] == []
    assert {"cv_roc_auc", "cv_accuracy", "top_decile_conversion", "base_rate"} <= set(
        metadata["metrics"]
    )

    fresh = training_leads(8, seed=5)
    assert score_leads(fresh, registry) == first.info.version
    assert {lead.score.model_version for lead in fresh if lead.score} == {first.info.version}
    dentists = [lead.score.value for lead in fresh if lead.category == "dentist" and lead.score]
    others = [lead.score.value for lead in fresh if lead.category != "dentist" and lead.score]
    assert min(dentists) > max(others)
    dentist = next(lead for lead in fresh if lead.category == "dentist")
    assert dentist.score is not None and "category dentist" in dentist.score.reasons

    # Outcomes that are noise cannot beat the promoted model: saved, not promoted.
    noise = [int(x) for x in np.random.default_rng(3).permutation([0, 1] * 40)]
    second = train_lead_model(leads, noise, registry)
    assert not second.promoted, second.decision
    assert second.incumbent_version == first.info.version
    assert second.decision.startswith(f"not promoted, {first.info.version} stays")
    assert [v.version for v in registry.versions("leads")] == [
        first.info.version,
        second.info.version,
    ]
    assert registry.promoted().version == first.info.version  # type: ignore[union-attr]


def test_a_promoted_model_of_another_feature_schema_falls_back_to_the_heuristic(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    # Never loaded: the schema check comes first, so the artifact can stand in for any model.
    stale = registry.save(
        "leads",
        {"pipeline": None, "typical_values": {}},
        {"feature_schema_hash": "0" * 64, "metrics": {"cv_roc_auc": 0.99}},
        fingerprint="older features",
    )
    registry.promote(stale.version, "trained before a feature changed")

    scored = training_leads(4, seed=9)
    assert score_leads(scored, registry) == HEURISTIC_VERSION
    assert all(lead.score and lead.score.model_version == HEURISTIC_VERSION for lead in scored)

    # Its 0.99 does not count: the comparison is with the heuristic that actually scores.
    leads = training_leads()
    labels = [int(lead.category == "dentist") for lead in leads]
    retrained = train_lead_model(leads, labels, registry)
    assert retrained.incumbent_version == HEURISTIC_VERSION
    assert any("no longer matches" in note for note in retrained.notes)
    assert retrained.promoted


@pytest.mark.parametrize("damage", ["folder deleted", "model file truncated"])
def test_an_unusable_promoted_model_falls_back_to_the_heuristic(
    tmp_path: Path, damage: str
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    info = registry.save(
        "leads",
        {"pipeline": None, "typical_values": {}},
        {"feature_schema_hash": LEAD_SCHEMA_HASH, "metrics": {"cv_roc_auc": 0.9}},
        fingerprint="data",
    )
    registry.promote(info.version, "test")
    if damage == "folder deleted":
        shutil.rmtree(info.path)
        assert registry.promoted() is None
    else:
        (info.path / "model.joblib").write_bytes(b"\x80\x04truncated")
    leads = [make_lead()]
    assert score_leads(leads, registry) == HEURISTIC_VERSION
    assert leads[0].score is not None and leads[0].score.model_version == HEURISTIC_VERSION


def test_a_model_trained_without_some_fields_scores_leads_that_have_them(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    leads = training_leads()
    for lead in leads:
        lead.business_status = None  # a source that never shows it; no company data either
    labels = [int(lead.category == "dentist") for lead in leads]
    assert train_lead_model(leads, labels, registry).promoted
    richer = make_lead(
        business_status="CLOSED_TEMPORARILY",
        enrichment=Enrichment(company_facts=CompanyFacts(provider="clearbit", employees=12)),
    )
    assert score_leads([richer, make_lead(1)], registry) == registry.promoted().version  # type: ignore[union-attr]
    assert richer.score is not None and 0 <= richer.score.value <= 100


def test_training_needs_enough_of_each_outcome(tmp_path: Path) -> None:
    leads = training_leads(30)
    with pytest.raises(TrainingDataError, match="at least 10 of each") as raised:
        train_lead_model(leads, [1] * 5 + [0] * 25, ModelRegistry(tmp_path))
    assert raised.value.source == "outcomes"


# --- labels, placeholders and tables ---------------------------------------------------------


def test_placeholders_become_missing_in_any_case() -> None:
    import pandas as pd

    raw = pd.Series(["Select", "UNKNOWN", "", "NA", "n/a", "None", "?", " web ", "0"])
    masked = mask_placeholders(raw)
    assert masked.isna().tolist() == [True] * 7 + [False, False]
    assert masked.iloc[7] == "web"


def test_labels_map_to_one_and_zero() -> None:
    import pandas as pd

    values = pd.Series(["Yes", " TRUE ", "1.0", "won", "No", "0", "lost", "false", "unknown", ""])
    labels = binary_labels(values, "converted")
    assert labels.iloc[:8].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert labels.iloc[8:].isna().all()
    with pytest.raises(TrainingDataError, match="not a yes/no outcome: found 'maybe'"):
        binary_labels(pd.Series(["yes", "maybe"]), "converted")


def write_table(path: Path, rows: list[list[str]]) -> Path:
    header = "lead_number,source,pages,country,converted"
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    return path


def lead_table_rows() -> list[list[str]]:
    sources = ["Google", "Select", "Referral", "Olark Chat"]
    pages = ["2", "?", "5", "", "3.5"]
    labels = ["Won", "lost", "lost", "", "lost"]
    return [[f"L{i:04d}", sources[i % 4], pages[i % 5], "PT", labels[i % 5]] for i in range(100)]


def test_table_columns_are_detected_and_placeholders_are_missing(tmp_path: Path) -> None:
    table = read_labelled_table(write_table(tmp_path / "leads.csv", lead_table_rows()), "converted")
    assert table.numeric == ["pages"]  # "?" and "" did not make it a text column
    assert table.categorical == ["source"]
    assert set(table.ignored) == {"lead_number", "country"}  # an identifier; one value
    assert table.unlabelled_rows == 20
    assert len(table.labels) == 80 and int(table.labels.sum()) == 20
    assert table.features["source"].isna().sum() == 20  # "Select"
    assert table.features["pages"].isna().sum() == 20  # "?" (the rows with "" have no label)


@pytest.mark.parametrize(
    ("label", "exclude", "source", "message"),
    [
        ("outcome", [], "label", "no column 'outcome' in leads.csv; columns: lead_number"),
        ("converted", ["pages", "visits"], "exclude", "no column 'visits' in leads.csv"),
        ("converted", ["converted"], "exclude", "label column 'converted' cannot be excluded"),
        ("source", [], "label", "column 'source' is not a yes/no outcome"),
    ],
)
def test_unusable_tables_are_explained(
    tmp_path: Path, label: str, exclude: list[str], source: str, message: str
) -> None:
    path = write_table(tmp_path / "leads.csv", lead_table_rows())
    with pytest.raises(TrainingDataError, match=re.escape(message)) as raised:
        read_labelled_table(path, label, exclude)
    assert raised.value.source == source


def test_a_label_with_one_outcome_cannot_be_trained_on(tmp_path: Path) -> None:
    rows = [[f"L{i}", "Google", str(i), "PT", "no"] for i in range(40)]
    with pytest.raises(TrainingDataError, match="0 converted and 40 not converted; training needs"):
        read_labelled_table(write_table(tmp_path / "leads.csv", rows), "converted")


def test_outcomes_file(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("Lead_ID,Outcome\na,won\nb,lost\na,lost\nc,\nd,1\n")
    outcomes = read_outcomes(path)
    assert outcomes.by_lead == {"a": 1, "b": 0, "d": 1}  # converted once counts as converted
    assert outcomes.unlabelled_rows == 1
    (tmp_path / "wrong.csv").write_text("id,result\na,won\n")
    with pytest.raises(TrainingDataError, match="needs the columns lead_id,outcome"):
        read_outcomes(tmp_path / "wrong.csv")
