"""`leadflow train`: a labelled table (the bank sample) against its baseline, clear errors, and
lead outcomes read from MongoDB (the real local server) with promotion of the better model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from connectors.mongo import LeadStore
from leadflow.cli_train import train_app
from leadflow.settings import Settings, get_settings
from models.lead import Lead, new_lead_id
from models.scoring import ModelRegistry
from tasks.score import score
from tests.conftest import RunningServices
from tests.test_scoring import training_leads

SAMPLE = Path(__file__).parent / "fixtures" / "scoring" / "bank-sample.csv"
METRIC_KEYS = {"cv_accuracy", "cv_roc_auc", "top_decile_conversion", "base_rate", "n_rows"}


@pytest.fixture(scope="module")
def own_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """LEADFLOW_HOME for this module: the models the commands save land here."""
    home = tmp_path_factory.mktemp("train") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEADFLOW_HOME", str(home))
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()


def run_train(*args: str | Path) -> Result:
    return CliRunner().invoke(train_app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bank_run(own_home: Path) -> tuple[Result, dict]:
    report = own_home.parent / "bank.json"
    result = run_train(
        "--data", SAMPLE, "--label", "output", "--exclude", "duration", "--report", report
    )
    assert result.exit_code == 0, result.output
    return result, json.loads(report.read_text())


def test_a_labelled_table_beats_its_baseline_and_reports_json(
    bank_run: tuple[Result, dict], own_home: Path
) -> None:
    result, report = bank_run
    assert set(report) >= {*METRIC_KEYS, "model_version"}
    assert set(report["baseline"]) >= METRIC_KEYS
    assert report["n_rows"] == 4000 and report["baseline"]["n_rows"] == 4000
    assert report["base_rate"] == pytest.approx(451 / 4000, abs=1e-4)
    assert report["cv_roc_auc"] > report["baseline"]["cv_roc_auc"]
    assert report["beats_baseline"] is True
    # Rank quality, not accuracy: the top tenth converts far above the 11% base rate.
    assert report["top_decile_conversion"] > 3 * report["base_rate"]
    assert report["excluded_columns"] == ["duration"]
    assert "duration" not in report["numeric_columns"] + report["categorical_columns"]
    for text in ("ROC AUC", "baseline (logistic regression)", "The model beats the baseline"):
        assert text in result.output

    registry = ModelRegistry(own_home / "models")
    info = registry.info(report["model_version"])
    assert info.kind == "table" and info.metadata["label"] == "output"
    assert info.metadata["excluded_columns"] == ["duration"]
    assert registry.promoted() is None  # a table model never scores leads


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv", "--label", "output"], "does not exist"),
        (["--data", SAMPLE, "--label", "converted"], "no column 'converted' in bank-sample.csv"),
        (["--data", SAMPLE, "--label", "output", "--exclude", "duration,calls"], "'calls'"),
        (["--data", SAMPLE, "--label", "job"], "not a yes/no outcome"),
        (["--data", SAMPLE], "--data needs --label COLUMN"),
        (["--label", "output"], "give either --outcomes FILE or --data FILE"),
    ],
)
def test_clear_errors_exit_2(own_home: Path, args: list[str | Path], message: str) -> None:
    result = run_train(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())  # rich wraps long messages


def test_registered_in_a_parent_app_it_is_the_train_command(own_home: Path) -> None:
    parent = typer.Typer()
    parent.add_typer(train_app)

    @parent.command()
    def other() -> None:
        """Another command, as the main CLI has."""

    result = CliRunner().invoke(parent, ["train", "--help"])
    assert result.exit_code == 0 and "--outcomes" in result.output


# --- outcomes from MongoDB -------------------------------------------------------------------


@pytest.fixture
def outcomes_env(services: RunningServices, own_home: Path) -> Iterator[Settings]:
    """This test's own database on the session's MongoDB-wire server."""
    database = f"train_{os.getpid()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEADFLOW_MONGODB_DB", database)
        get_settings.cache_clear()
        settings = get_settings()
        yield settings
        LeadStore.from_settings(settings).client.drop_database(database)
    get_settings.cache_clear()


def write_outcomes(path: Path, outcomes: dict[str, str]) -> Path:
    path.write_text("lead_id,outcome\n" + "".join(f"{k},{v}\n" for k, v in outcomes.items()))
    return path


def test_outcomes_train_from_stored_leads_and_promote_only_the_better_model(
    outcomes_env: Settings, tmp_path: Path
) -> None:
    store = LeadStore.from_settings(outcomes_env)
    leads = training_leads()
    for lead in leads:
        lead.lead_id = new_lead_id()
    # A duplicate found later: merged into the first dentist, its outcome is that lead's.
    duplicate = Lead(lead_id=new_lead_id(), name="Business 0 (duplicate)", phone="+15125559999")
    store.upsert_leads([*leads, duplicate])
    store.upsert_leads([], [duplicate.model_copy(update={"merged_into": leads[0].lead_id})])

    outcomes = {lead.lead_id: "won" if lead.category == "dentist" else "lost" for lead in leads}
    outcomes[str(duplicate.lead_id)] = "won"
    outcomes["01NOSUCHLEAD0000000000000"] = "lost"
    first = run_train(
        "--outcomes",
        write_outcomes(tmp_path / "won.csv", outcomes),
        "--report",
        tmp_path / "won.json",
    )
    assert first.exit_code == 0, first.output
    output = " ".join(first.output.split())
    assert "82 lead ids with an outcome -> 80 stored leads" in output
    assert "1 reached through merges, 1 not found" in output
    assert "promoted: CV ROC AUC" in output
    report = json.loads((tmp_path / "won.json").read_text())
    assert report["promoted"] is True and report["not_found"] == ["01NOSUCHLEAD0000000000000"]
    registry = ModelRegistry.from_settings(outcomes_env)
    promoted = registry.promoted()
    assert promoted is not None and promoted.version == report["model_version"]
    assert promoted.metadata["training_rows"] == 80

    # Later runs score with it.
    assert score(store.leads_by_ids([leads[1].lead_id])) == promoted.version  # type: ignore[list-item]

    bits = np.random.default_rng(3).permutation([0, 1] * 41)
    noise = {lead_id: str(bit) for lead_id, bit in zip(outcomes, bits, strict=True)}
    second = run_train("--outcomes", write_outcomes(tmp_path / "noise.csv", noise))
    assert second.exit_code == 0, second.output
    assert f"not promoted, {promoted.version} stays" in " ".join(second.output.split())
    assert len(registry.versions("leads")) == 2
    assert registry.promoted().version == promoted.version  # type: ignore[union-attr]
