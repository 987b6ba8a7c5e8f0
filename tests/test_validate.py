"""Stage validate: the lead expectation suite (Great Expectations) as a gate and as a CLI.

GX takes seconds to import and each suite run costs tens of milliseconds, so the batch is
validated once per module (`gated`) and the assertions share it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from prefect.states import Failed
from typer.testing import CliRunner, Result

from leadflow.cli_validate import validate_app
from models.lead import GeoPoint, Lead, Score, new_lead_id
from tasks.normalize import normalize_record
from tasks.validate import (
    ValidationGateError,
    ValidationResult,
    artifact_key,
    file_frame,
    plan_checks,
    validate_leads,
    validate_task,
    validation_markdown,
)

FIXTURES = Path(__file__).parent / "fixtures" / "validate"

# The main CLI registers the command this way (leadflow/cli.py: `app.add_typer(validate_app)`).
cli = typer.Typer()
cli.add_typer(validate_app)


@cli.command()
def other() -> None:
    """A second command, so `validate` is a subcommand as it is in the real CLI."""


def invoke(*args: str) -> Result:
    # Wide enough that the report table does not wrap the values the tests look for.
    return CliRunner().invoke(cli, ["validate", *args], env={"COLUMNS": "240"})


# --- the CLI -------------------------------------------------------------------------------


def test_broken_file_fails_naming_each_failure(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    result = invoke(str(FIXTURES / "broken.csv"), "--docs", str(docs))
    assert result.exit_code == 1, result.output
    failures = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    expected = {
        "phone: phone is E.164": "'+1 555', '5125550401' (rows 1, 2)",
        "rating: rating is between 0 and 5": "e.g. 7 (rows 2)",
        "rating: rating is a number": "e.g. 'five' (rows 7)",
        "review_count: review_count is 0 or more": "e.g. -4 (rows 3)",
        "best_email: best_email is a well-formed email": "'bob@', 'sushi at sakura.test'",
        "source, source_id: (source, source_id) is unique": "('directory', 'L4') (rows 4, 5)",
        "name: name is present": "e.g. missing (rows 6)",
        "latitude: latitude is between -90 and 90": "e.g. 95 (rows 7)",
        "category: category is a taxonomy slug": "e.g. 'bakeries' (rows 7)",
    }
    for expectation, detail in expected.items():
        assert any(expectation in line and detail in line for line in failures), (
            expectation,
            failures,
        )
    assert len(failures) == len(expected)
    assert "broken.csv: 9 expectation(s) failed" in result.output
    assert (docs / "index.html").is_file()
    assert f"Data Docs: {docs / 'index.html'}" in result.output


def test_clean_file_passes() -> None:
    result = invoke(str(FIXTURES / "clean.csv"))
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output
    assert "clean.csv: every expectation passed" in result.output


def test_exported_lead_documents_are_flattened_and_keyed_on_lead_id() -> None:
    clean = invoke(str(FIXTURES / "clean.jsonl"))
    assert clean.exit_code == 0, clean.output

    broken = invoke(str(FIXTURES / "broken.jsonl"))
    assert broken.exit_code == 1, broken.output
    failures = [line for line in broken.output.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 3, failures
    assert any("lead_id is unique" in f and "(rows 1, 2)" in f for f in failures)
    assert any("score is between 0 and 100" in f and "e.g. 120 (rows 1)" in f for f in failures)
    assert any("emails" in f and "not-an-email" in f and "(rows 3)" in f for f in failures)
    # With a lead_id, (source, source_id) is not the key: L1 twice is no failure there.
    assert "checked on lead_id instead" in broken.output


def test_expectations_on_absent_optional_columns_are_skipped() -> None:
    # partial.csv has only "Name" and "Phone" (headers match case-insensitively).
    result = invoke(str(FIXTURES / "partial.csv"))
    assert result.exit_code == 0, result.output
    skipped = next(line for line in result.output.splitlines() if line.startswith("Skipped"))
    for column in ("rating", "review_count", "best_email", "emails", "category", "score"):
        assert f"no {column} column" in skipped
    assert "no source, source_id column" in skipped

    planned, skipped_checks = plan_checks(["name", "phone"], pipeline=False)
    assert [c.key for c in planned] == ["name_column", "name_present", "phone_e164"]
    assert all(c.scope != "pipeline" for c, _ in skipped_checks)


def test_a_file_without_a_name_column_fails() -> None:
    result = invoke(str(FIXTURES / "no_name.csv"))
    assert result.exit_code == 1, result.output
    assert "FAILED no_name.csv: there is no name column (every lead needs a name)" in result.output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("leads.txt", "name\nArt's Deli\n", "unsupported file type '.txt'"),
        ("leads.jsonl", '{"name": "Art\'s Deli"}\n{"name": \n', "cannot read"),
        ("leads.csv", "", "cannot read"),
    ],
)
def test_unreadable_files_exit_2(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = invoke(str(path))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nowhere.csv"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_file_numbers_keep_their_text_so_words_are_not_blanks() -> None:
    import pandas as pd

    frame = file_frame(pd.DataFrame({"Name": ["A", "B", "C"], "Rating": ["4.5", "five", None]}))
    assert frame["rating"].tolist()[0] == 4.5
    assert frame["rating"].isna().tolist() == [False, True, True]
    written = frame["rating_as_written"]
    assert written.tolist()[:2] == ["4.5", "five"] and written.isna().tolist()[2]


# --- the pipeline gate ---------------------------------------------------------------------


def _lead(index: int, **fields: object) -> Lead:
    """A lead as normalise makes it, with the lead_id dedup would give it."""
    raw = {
        "source": "directory",
        "source_id": f"L{index}",
        "name": f"Business {index}",
        "address": f"{100 + index} Main Street, Austin, TX 78701",
        "city": "Austin",
        "state": "TX",
        "country": "US",
        "phone": f"(512) 555-{index:04d}",
        "website": f"http://business{index}.test/",
        "categories": ["Dentist"],
        "emails": [f"info@business{index}.test"],
        "rating": "4.5",
        "review_count": "12",
        "latitude": "30.26",
        "longitude": "-97.74",
    }
    lead = normalize_record(raw, run_id="run-v")
    assert isinstance(lead, Lead), lead
    lead.lead_id = new_lead_id()
    for name, value in fields.items():
        setattr(lead, name, value)
    return lead


CLEAN_LEADS = 8


@pytest.fixture(scope="module")
def batch() -> tuple[list[Lead], dict[int, str]]:
    """Clean leads, plus broken ones (batch index -> the reason expected for it)."""
    leads = [_lead(i) for i in range(CLEAN_LEADS)]
    leads[0].score = Score(value=72.5, model_version="heuristic-1")
    twin_id = new_lead_id()
    broken = {
        "phone '+1 555' is not E.164": {"phone": "+1 555"},
        "rating 7 is outside 0-5": {"rating": 7.0},
        "review_count -3 is negative": {"review_count": -3},
        "best_email 'bob@' is not a well-formed email": {"best_email": "bob@"},
        "category 'bakeries' is not a taxonomy slug": {"category": "bakeries"},
        "lead_id is missing": {"lead_id": None},
        "name is missing": {"name": "  "},
        # The models refuse these; a stage writing them directly is what the gate is for.
        "score 120 is outside 0-100": {
            "score": Score.model_construct(value=120.0, reasons=[], model_version="bad")
        },
        "latitude 95 is outside -90..90": {
            "location": GeoPoint.model_construct(type="Point", coordinates=(-97.7, 95.0))
        },
        f"lead_id '{twin_id}' is not unique": {"lead_id": twin_id},
    }
    expected: dict[int, str] = {}
    for reason, fields in broken.items():
        expected[len(leads)] = reason
        leads.append(_lead(len(leads), **fields))
    # The twin of the last one: both rows carry the duplicate id.
    expected[len(leads)] = f"lead_id '{twin_id}' is not unique"
    leads.append(_lead(len(leads), lead_id=twin_id))
    return leads, expected


@pytest.fixture(scope="module")
def gated(
    batch: tuple[list[Lead], dict[int, str]], tmp_path_factory: pytest.TempPathFactory
) -> ValidationResult:
    leads, _ = batch
    docs = tmp_path_factory.mktemp("run") / "data_docs"
    return validate_leads(leads, run_id="run-v", max_failing_share=0.9, docs_dir=docs)


def test_broken_leads_go_to_quarantine_with_reasons(
    batch: tuple[list[Lead], dict[int, str]], gated: ValidationResult
) -> None:
    leads, expected = batch
    assert len(gated.quarantined) == len(expected)
    by_name = {q.payload["name"]: q for q in gated.quarantined}
    for index, reason in expected.items():
        record = by_name[leads[index].name]
        assert record.reasons == [reason]
        assert record.stage == "validate"
        assert record.run_id == "run-v"
        assert record.source == "directory"
        assert record.payload == leads[index].to_document()


def test_nothing_is_lost_and_counts_add_up(
    batch: tuple[list[Lead], dict[int, str]], gated: ValidationResult
) -> None:
    leads, expected = batch
    assert gated.leads == leads[:CLEAN_LEADS]  # the clean ones, in batch order
    assert len(gated.leads) + len(gated.quarantined) == len(leads)
    summary = gated.summary
    assert (summary.rows, summary.failing_rows) == (len(leads), len(expected))
    assert summary.failing_share == pytest.approx(len(expected) / len(leads))
    assert summary.passed
    assert summary.failures_by_expectation["phone_e164"] == 1
    assert summary.failures_by_expectation["lead_id_unique"] == 2
    assert summary.failures_by_expectation["name_present"] == 1
    assert summary.counts() == {
        "rows": len(leads),
        "passing": CLEAN_LEADS,
        "quarantined": len(expected),
        **{
            f"failed_{key}": count
            for key, count in summary.failures_by_expectation.items()
            if count
        },
    }


def test_data_docs_are_written_for_the_run(gated: ValidationResult) -> None:
    index = gated.data_docs_index
    assert index is not None and index.name == "index.html" and index.is_file()
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 1 and "run-v" in str(pages[0])  # one page for this run's result


def test_the_artifact_lists_every_expectation(gated: ValidationResult) -> None:
    markdown = validation_markdown(gated)
    assert "| phone is E.164 (+, then 7-15 digits) where present | phone | failed | 1 |" in markdown
    assert "| category is a taxonomy slug" in markdown and "| lead_id | failed | 2 |" in markdown
    assert str(gated.data_docs_index) in markdown
    assert artifact_key("Run_42/ABC") == "validation-run-42-abc"


def test_below_the_threshold_the_batch_passes_with_quarantine(
    batch: tuple[list[Lead], dict[int, str]],
) -> None:
    leads, expected = batch
    share = len(expected) / len(leads)
    result = validate_leads(leads, run_id="run-v", max_failing_share=share)
    assert result.summary.passed and len(result.quarantined) == len(expected)
    result.raise_for_threshold()  # exactly at the threshold: passes
    assert result.data_docs_index is None  # no docs_dir, no Data Docs


def test_above_the_threshold_the_batch_fails_after_quarantine(
    batch: tuple[list[Lead], dict[int, str]],
) -> None:
    leads, expected = batch
    result = validate_leads(leads, run_id="run-v", max_failing_share=0.2)
    assert not result.summary.passed
    assert len(result.quarantined) == len(expected)  # kept, for the task to store first
    with pytest.raises(ValidationGateError) as failure:
        result.raise_for_threshold()
    message = str(failure.value)
    assert f"{len(expected)} of {len(leads)} leads" in message
    assert "more than the 20.0% allowed (validation_max_failing_share)" in message
    assert "lead_id_unique 2" in message and "in quarantine" in message


def test_an_empty_batch_passes() -> None:
    result = validate_leads([], run_id="run-v", max_failing_share=0.0)
    assert result.summary.passed and result.leads == [] and result.quarantined == []


def test_the_task_does_not_retry_a_batch_that_failed_the_gate() -> None:
    should_retry = validate_task.retry_condition_fn
    assert should_retry is not None
    gate = Failed(data=ValidationGateError("too many failing leads"))
    assert should_retry(validate_task, None, gate) is False  # type: ignore[arg-type]
    assert should_retry(validate_task, None, Failed(data=OSError("mongo down"))) is True  # type: ignore[arg-type]
