"""Stage `validate`: the Great Expectations gate every batch passes before `load`.

One expectation suite for leads (`LEAD_SUITE`, built in code) runs on a flat table with one row
per lead (`lead_frame`; `FRAME_COLUMNS` names its columns). What it expects:

- `name` is present (and, in a file, the `name` column exists); in the pipeline `lead_id` is
  present too (dedup gives every lead one);
- `lead_id` is unique; a file without `lead_id` has its (`source`, `source_id`) unique instead;
- `phone`, where present, is E.164 (`+`, then 7 to 15 digits, no leading 0);
- `best_email` and every address in `emails` (joined with "; ") are well-formed emails;
- `rating` is 0-5, `review_count` is 0 or more, `latitude` -90..90, `longitude` -180..180,
  `score` (the score stage's value) 0-100, each where present;
- `category` is one of the taxonomy slugs (`models.taxonomy.CATEGORY_SLUGS`): normalise maps
  unknown raw categories to `other`, so anything else is a defect;
- in a file, each numeric column holds numbers (a rating of "five" is a failure, not a blank).

A pipeline batch always has every column. A lead file from elsewhere (`leadflow validate`) has
only some: expectations on absent optional columns are skipped, and said so, while a missing
`name` column fails the file.

Every lead ends in exactly one place: it passes, or it goes to quarantine with the failed
expectations as readable reasons ("phone '+1 555' is not E.164"). The batch itself fails only
when the share of failing leads passes `validation_max_failing_share`; the failing leads are
in quarantine before it does. GX Data Docs (HTML) for the run are written under
`<runs_dir>/<run_id>/data_docs/`.

Great Expectations takes seconds to import, so it is imported on first use, not with this
module (the flow and the CLI import this module at start-up).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from connectors.mongo import shared_store
from leadflow.settings import get_settings
from models.lead import EMAIL_PATTERN, Lead, Quarantined
from models.taxonomy import CATEGORY_SLUGS

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State

STAGE = "validate"

E164_PATTERN = r"^\+[1-9]\d{6,14}$"
# The address shape normalise accepts (models.lead.EMAIL_PATTERN), for one value and a list.
BEST_EMAIL_PATTERN = rf"^{EMAIL_PATTERN}$"
EMAIL_SEPARATOR = "; "
EMAIL_LIST_PATTERN = rf"^{EMAIL_PATTERN}(?:{EMAIL_SEPARATOR}{EMAIL_PATTERN})*$"
_NUMBER_PATTERN = r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"

TEXT_COLUMNS = ("lead_id", "name", "phone", "best_email", "category", "source", "source_id")
NUMERIC_COLUMNS = ("rating", "review_count", "latitude", "longitude", "score")
FRAME_COLUMNS = (
    "lead_id", "name", "phone", "best_email", "emails", "rating", "review_count", "latitude",
    "longitude", "score", "category", "source", "source_id",
)  # fmt: skip
# A file's numeric column also keeps its text as written, so text that is not a number fails
# an expectation instead of quietly becoming a blank.
AS_WRITTEN = "_as_written"
# File headers other tools write for our columns (used only when ours is absent).
COLUMN_ALIASES = {
    "lat": "latitude",
    "lng": "longitude",
    "lon": "longitude",
    "reviews": "review_count",
    "email": "best_email",
}

Scope = Literal["all", "pipeline", "file"]

# One GX run at a time per process: GX resolves some stores through a process-wide "current
# project", which concurrent contexts (threaded task runners) would share.
_GX_LOCK = threading.Lock()
_DOCS_SITE = "leadflow"


@dataclass(frozen=True)
class Check:
    """One expectation of the lead suite, with what a reader needs to understand a failure.

    `columns` are the frame columns it reads (the check is skipped when one is absent);
    `label` is the column as the reader knows it; `failure` describes one failing row, with
    `{value}` the row's value(s).
    """

    key: str
    label: str
    expectation: str  # a class in great_expectations.expectations
    kwargs: Mapping[str, Any]
    columns: tuple[str, ...]
    description: str
    failure: str
    scope: Scope = "all"
    only_without: str | None = None  # skipped when this column is present (it is the key then)


def _in_range(key: str, low: float | None, high: float | None, failure: str) -> Check:
    bounds = {"min_value": low, "max_value": high}
    text = f"between {low:g} and {high:g}" if high is not None else f"{low:g} or more"
    return Check(
        key=f"{key}_range",
        label=key,
        expectation="ExpectColumnValuesToBeBetween",
        kwargs={"column": key, **{k: v for k, v in bounds.items() if v is not None}},
        columns=(key,),
        description=f"{key} is {text} where present",
        failure=f"{key} {{value}} {failure}",
    )


def _is_number(column: str) -> Check:
    return Check(
        key=f"{column}_is_number",
        label=column,
        expectation="ExpectColumnValuesToMatchRegex",
        kwargs={"column": column + AS_WRITTEN, "regex": _NUMBER_PATTERN},
        columns=(column + AS_WRITTEN,),
        description=f"{column} is a number where present",
        failure=f"{column} {{value}} is not a number",
        scope="file",
    )


LEAD_SUITE: tuple[Check, ...] = (
    Check(
        key="name_column",
        label="name",
        expectation="ExpectColumnToExist",
        kwargs={"column": "name"},
        columns=(),
        description="the name column exists: every lead needs a name",
        failure="there is no name column (every lead needs a name)",
    ),
    Check(
        key="name_present",
        label="name",
        expectation="ExpectColumnValuesToNotBeNull",
        kwargs={"column": "name"},
        columns=("name",),
        description="name is present",
        failure="name is missing",
    ),
    Check(
        key="lead_id_present",
        label="lead_id",
        expectation="ExpectColumnValuesToNotBeNull",
        kwargs={"column": "lead_id"},
        columns=("lead_id",),
        description="lead_id is present (dedup gives every lead one)",
        failure="lead_id is missing",
        scope="pipeline",
    ),
    Check(
        key="lead_id_unique",
        label="lead_id",
        expectation="ExpectColumnValuesToBeUnique",
        kwargs={"column": "lead_id"},
        columns=("lead_id",),
        description="lead_id is unique",
        failure="lead_id {value} is not unique",
    ),
    Check(
        key="source_key_unique",
        label="source, source_id",
        expectation="ExpectCompoundColumnsToBeUnique",
        kwargs={"column_list": ["source", "source_id"], "ignore_row_if": "any_value_is_missing"},
        columns=("source", "source_id"),
        description="(source, source_id) is unique (the key of a file without lead_id)",
        failure="(source, source_id) {value} is not unique",
        scope="file",
        only_without="lead_id",
    ),
    Check(
        key="phone_e164",
        label="phone",
        expectation="ExpectColumnValuesToMatchRegex",
        kwargs={"column": "phone", "regex": E164_PATTERN},
        columns=("phone",),
        description="phone is E.164 (+, then 7-15 digits) where present",
        failure="phone {value} is not E.164",
    ),
    Check(
        key="best_email_format",
        label="best_email",
        expectation="ExpectColumnValuesToMatchRegex",
        kwargs={"column": "best_email", "regex": BEST_EMAIL_PATTERN},
        columns=("best_email",),
        description="best_email is a well-formed email where present",
        failure="best_email {value} is not a well-formed email",
    ),
    Check(
        key="emails_format",
        label="emails",
        expectation="ExpectColumnValuesToMatchRegex",
        kwargs={"column": "emails", "regex": EMAIL_LIST_PATTERN},
        columns=("emails",),
        description="every address in emails is a well-formed email",
        failure="emails {value} holds a malformed address",
    ),
    *(_is_number(column) for column in NUMERIC_COLUMNS),
    _in_range("rating", 0, 5, "is outside 0-5"),
    _in_range("review_count", 0, None, "is negative"),
    _in_range("latitude", -90, 90, "is outside -90..90"),
    _in_range("longitude", -180, 180, "is outside -180..180"),
    _in_range("score", 0, 100, "is outside 0-100"),
    Check(
        key="category_taxonomy",
        label="category",
        expectation="ExpectColumnValuesToBeInSet",
        kwargs={"column": "category", "value_set": list(CATEGORY_SLUGS)},
        columns=("category",),
        description="category is a taxonomy slug (models.taxonomy; unknown raw ones are 'other')",
        failure="category {value} is not a taxonomy slug",
    ),
)


@dataclass(frozen=True)
class CheckOutcome:
    """What one check of the suite found: passed, failed (with the failing rows) or skipped."""

    check: Check
    passed: bool = True
    failing_rows: tuple[int, ...] = ()  # frame row positions, 0-based
    skipped: str | None = None  # why the check did not run

    @property
    def status(self) -> Literal["passed", "failed", "skipped"]:
        if self.skipped is not None:
            return "skipped"
        return "passed" if self.passed else "failed"


@dataclass(frozen=True)
class FrameValidation:
    """The suite's verdict on one frame, check by check, in suite order."""

    rows: int
    outcomes: tuple[CheckOutcome, ...]
    data_docs_index: Path | None

    @property
    def success(self) -> bool:
        return all(o.status != "failed" for o in self.outcomes)

    @property
    def failed(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def skipped(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.status == "skipped"]


@dataclass(frozen=True)
class ValidationSummary:
    rows: int
    failing_rows: int
    failing_share: float
    max_failing_share: float
    failures_by_expectation: dict[str, int]  # check key -> failing rows, for every check run
    passed: bool  # the batch passes the gate: failing_share <= max_failing_share

    def counts(self) -> dict[str, int]:
        """For the run document (`record_stage`): plain ints, failing checks only."""
        return {
            "rows": self.rows,
            "passing": self.rows - self.failing_rows,
            "quarantined": self.failing_rows,
            **{f"failed_{k}": n for k, n in self.failures_by_expectation.items() if n},
        }


class ValidationGateError(RuntimeError):
    """Too large a share of the batch failed validation: the batch (the run) fails."""


@dataclass
class ValidationResult:
    """Every input lead is in exactly one of `leads` (passed) and `quarantined`."""

    run_id: str | None
    leads: list[Lead]
    quarantined: list[Quarantined]
    summary: ValidationSummary
    outcomes: tuple[CheckOutcome, ...]
    data_docs_index: Path | None = None

    def raise_for_threshold(self) -> None:
        """Fail the batch when the failing share passes the threshold; quarantine first."""
        if self.summary.passed:
            return
        s = self.summary
        worst = ", ".join(
            f"{key} {count}"
            for key, count in sorted(s.failures_by_expectation.items(), key=lambda kv: -kv[1])
            if count
        )
        raise ValidationGateError(
            f"validation failed for run {self.run_id}: {s.failing_rows} of {s.rows} leads "
            f"({s.failing_share:.1%}) broke the lead expectation suite, more than the "
            f"{s.max_failing_share:.1%} allowed (validation_max_failing_share). "
            f"Failing expectations (rows): {worst}. The failing leads are in quarantine "
            f"(stage '{STAGE}')"
            + (f"; Data Docs: {self.data_docs_index}" if self.data_docs_index else "")
        )


# --- frames ------------------------------------------------------------------------------


def _lead_row(lead: Lead) -> tuple[Any, ...]:
    lng, lat = lead.location.coordinates if lead.location else (None, None)
    first = lead.sources[0] if lead.sources else None
    return (
        # A blank key or name is as missing as an absent one (a file's blank cell is too).
        lead.lead_id or None,
        lead.name.strip() or None,
        lead.phone,
        lead.best_email,
        EMAIL_SEPARATOR.join(e.value for e in lead.emails) or None,
        lead.rating,
        lead.review_count,
        lat,
        lng,
        lead.score.value if lead.score else None,
        lead.category,
        first.source if first else None,
        first.source_id if first else None,
    )


def lead_frame(leads: Sequence[Lead]) -> pd.DataFrame:
    """One row per lead, in batch order (row i is leads[i]), with every `FRAME_COLUMNS`."""
    frame = pd.DataFrame.from_records(
        [_lead_row(lead) for lead in leads], columns=list(FRAME_COLUMNS)
    )
    # Blank numeric columns come out as object; GX compares numbers fastest in float columns.
    return frame.astype(dict.fromkeys(NUMERIC_COLUMNS, "float64"))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    """A cell as text; blank cells are missing values, as pandas reads them from a CSV."""
    if _missing(value):
        return None
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text or None


def _email_list(value: Any) -> str | None:
    """`emails` as written in a file (a list, or addresses split by `;`, `,` or spaces),
    joined the way `lead_frame` joins a lead's addresses."""
    if isinstance(value, list):
        items = [item.get("value") if isinstance(item, dict) else item for item in value]
    elif _missing(value):
        return None
    else:
        items = re.split(r"[;,\s]+", str(value))
    addresses = [text for item in items if (text := _text(item))]
    return EMAIL_SEPARATOR.join(addresses) or None


def _score_value(value: Any) -> Any:
    # An exported lead document holds the score block; a flat file holds the number.
    return value.get("value") if isinstance(value, dict) else value


def _coordinate(value: Any, index: int) -> Any:
    # GeoJSON point (an exported lead's `location`): coordinates are [longitude, latitude].
    if isinstance(value, dict) and isinstance(value.get("coordinates"), list | tuple):
        coordinates = value["coordinates"]
        return coordinates[index] if len(coordinates) > index else None
    return None


def _first_source(value: Any, key: str) -> Any:
    # An exported lead's `sources` list: its first sighting is the row's (source, source_id).
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0].get(key)
    return None


def _header(name: object) -> str:
    return re.sub(r"\s+", "_", str(name).strip().lower())


def file_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """A lead file as read by pandas -> the validation frame, with only the columns it has.

    Headers are matched case-insensitively (`COLUMN_ALIASES` too); exported lead documents
    (JSONL with `score`, `location`, `sources`, `emails` objects) are flattened as
    `lead_frame` flattens leads. Numeric columns are parsed, keeping the text as written
    beside them (`<column>_as_written`).
    """
    table = raw.rename(columns=_header).reset_index(drop=True)
    table = table.loc[:, ~table.columns.duplicated()]
    for alias, column in COLUMN_ALIASES.items():
        if alias in table.columns and column not in table.columns:
            table = table.rename(columns={alias: column})
    derived = {
        "latitude": ("location", lambda v: _coordinate(v, 1)),
        "longitude": ("location", lambda v: _coordinate(v, 0)),
        "source": ("sources", lambda v: _first_source(v, "source")),
        "source_id": ("sources", lambda v: _first_source(v, "source_id")),
    }
    columns: dict[str, pd.Series] = {}
    for column, (origin, extract) in derived.items():
        if column not in table.columns and origin in table.columns:
            columns[column] = table[origin].map(extract)
    columns.update({c: table[c] for c in FRAME_COLUMNS if c in table.columns})

    frame: dict[str, Any] = {}
    for column in FRAME_COLUMNS:
        if column not in columns:
            continue
        values = columns[column]
        if column == "emails":
            frame[column] = [_email_list(v) for v in values]
        elif column in NUMERIC_COLUMNS:
            written = [_text(_score_value(v) if column == "score" else v) for v in values]
            frame[column] = pd.to_numeric(pd.Series(written, dtype=object), errors="coerce")
            frame[column + AS_WRITTEN] = written
        else:
            frame[column] = [_text(v) for v in values]
    return pd.DataFrame(frame, index=pd.RangeIndex(len(table)))


# --- the suite ---------------------------------------------------------------------------


def plan_checks(
    columns: Iterable[str], *, pipeline: bool
) -> tuple[list[Check], list[tuple[Check, str]]]:
    """The checks that run on a frame with these columns, and those skipped (with why)."""
    present = set(columns)
    mode: Scope = "pipeline" if pipeline else "file"
    planned: list[Check] = []
    skipped: list[tuple[Check, str]] = []
    for check in LEAD_SUITE:
        if check.scope not in ("all", mode):
            continue
        if check.only_without and check.only_without in present:
            skipped.append((check, f"checked on {check.only_without} instead"))
        elif absent := [c.removesuffix(AS_WRITTEN) for c in check.columns if c not in present]:
            skipped.append((check, f"no {', '.join(absent)} column"))
        else:
            planned.append(check)
    return planned, skipped


def _data_context(docs_dir: Path | None) -> Any:
    """An ephemeral GX context (in-memory stores), with a filesystem Data Docs site if asked."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = (
        {
            _DOCS_SITE: {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
        if docs_dir is not None
        else {}
    )
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        # The machine may be offline, and a worker's log is no place for progress bars.
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_suite(
    frame: pd.DataFrame, checks: Sequence[Check], *, docs_dir: Path | None, run_name: str
) -> dict[str, tuple[bool, tuple[int, ...]]]:
    """Run the checks in GX: check key -> (passed, failing row positions)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    with _GX_LOCK:
        context = _data_context(docs_dir)
        batch = (
            context.data_sources.add_pandas("leadflow")
            .add_dataframe_asset("leads")
            .add_batch_definition_whole_dataframe("batch")
        )
        expectations = [
            getattr(gxe, check.expectation)(
                **check.kwargs, description=check.description, meta={"check": check.key}
            )
            for check in checks
        ]
        suite = context.suites.add(gx.ExpectationSuite(name="leads", expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="leads", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="leadflow-validate",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data-docs", site_names=[_DOCS_SITE])]
                if docs_dir is not None
                else [],
                # COMPLETE: every failing row's index, not a sample, so each maps to its lead.
                result_format={"result_format": "COMPLETE"},
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
        )
    (validation,) = result.run_results.values()
    outcomes: dict[str, tuple[bool, tuple[int, ...]]] = {}
    for item in validation.results:
        key = item.expectation_config.meta["check"]
        if item.exception_info.get("raised_exception"):
            # A frame this module built that GX cannot check is a bug, not bad data.
            raise RuntimeError(
                f"expectation {key} could not run: {item.exception_info.get('exception_message')}"
            )
        rows = tuple(int(i) for i in item.result.get("unexpected_index_list") or ())
        outcomes[key] = (bool(item.success), rows)
    return outcomes


def validate_frame(
    frame: pd.DataFrame,
    *,
    pipeline: bool,
    docs_dir: Path | None = None,
    run_name: str = "leadflow",
) -> FrameValidation:
    """Run the lead suite on a frame (`lead_frame` or `file_frame`); Data Docs to `docs_dir`.

    `pipeline` adds the checks only a pipeline batch must pass (`lead_id` present) and drops
    those only for files (numbers as written, (source, source_id) as the key).
    """
    planned, skipped = plan_checks(frame.columns, pipeline=pipeline)
    results = _run_suite(frame, planned, docs_dir=docs_dir, run_name=run_name)
    reasons_skipped = {check.key: why for check, why in skipped}
    outcomes = tuple(
        CheckOutcome(check, passed=results[check.key][0], failing_rows=results[check.key][1])
        if check.key in results
        else CheckOutcome(check, skipped=reasons_skipped[check.key])
        for check in LEAD_SUITE
        if check.key in results or check.key in reasons_skipped
    )
    return FrameValidation(
        rows=len(frame),
        outcomes=outcomes,
        data_docs_index=docs_dir / "index.html" if docs_dir is not None else None,
    )


def shown(value: Any) -> str:
    """A value as a failure message shows it: strings quoted, numbers plain."""
    if isinstance(value, tuple):
        return "(" + ", ".join(shown(v) for v in value) + ")"
    if _missing(value):
        return "missing"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def row_value(frame: pd.DataFrame, check: Check, row: int) -> Any:
    """The value(s) a check saw in one row: one column's value, or a tuple for several."""
    values = tuple(frame[column].iat[row] for column in check.columns)
    return values[0] if len(values) == 1 else values


def failure_reason(frame: pd.DataFrame, check: Check, row: int) -> str:
    return check.failure.format(value=shown(row_value(frame, check, row)))


def failure_reasons(frame: pd.DataFrame, validation: FrameValidation) -> dict[int, list[str]]:
    """Row position -> the readable reasons it failed, for every failing row."""
    reasons: dict[int, list[str]] = {}
    for outcome in validation.failed:
        for row in outcome.failing_rows:
            reasons.setdefault(row, []).append(failure_reason(frame, outcome.check, row))
    return reasons


def validate_leads(
    leads: Sequence[Lead],
    *,
    run_id: str | None,
    max_failing_share: float,
    docs_dir: Path | None = None,
) -> ValidationResult:
    """Validate a batch: the passing leads, the failing ones as quarantine records, a summary.

    Never raises for bad data (call `raise_for_threshold` after quarantining), so the failing
    leads can be kept before a batch fails.
    """
    frame = lead_frame(leads)
    validation = validate_frame(frame, pipeline=True, docs_dir=docs_dir, run_name=run_id or STAGE)
    reasons = failure_reasons(frame, validation)
    passing = [lead for row, lead in enumerate(leads) if row not in reasons]
    quarantined = [
        Quarantined(
            run_id=run_id,
            stage=STAGE,
            reasons=reasons[row],
            source=leads[row].sources[0].source if leads[row].sources else None,
            payload=leads[row].to_document(),
        )
        for row in sorted(reasons)
    ]
    rows = len(leads)
    share = len(reasons) / rows if rows else 0.0
    summary = ValidationSummary(
        rows=rows,
        failing_rows=len(reasons),
        failing_share=share,
        max_failing_share=max_failing_share,
        failures_by_expectation={
            o.check.key: len(o.failing_rows) for o in validation.outcomes if o.status != "skipped"
        },
        passed=share <= max_failing_share,
    )
    return ValidationResult(
        run_id=run_id,
        leads=passing,
        quarantined=quarantined,
        summary=summary,
        outcomes=validation.outcomes,
        data_docs_index=validation.data_docs_index,
    )


# --- the Prefect task --------------------------------------------------------------------


def artifact_key(run_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "validation-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")


def validation_markdown(result: ValidationResult) -> str:
    s = result.summary
    rows = "\n".join(
        f"| {o.check.description} | {o.check.label} | {o.status} | {len(o.failing_rows)} |"
        for o in result.outcomes
    )
    verdict = "passed" if s.passed else "FAILED"
    return (
        f"# Validation of run `{result.run_id}`: {verdict}\n\n"
        f"{s.rows} leads: {s.rows - s.failing_rows} passed, {s.failing_rows} quarantined "
        f"({s.failing_share:.1%}; the batch fails above {s.max_failing_share:.1%}).\n\n"
        f"| expectation | column | status | failing rows |\n|---|---|---|---|\n{rows}\n\n"
        f"Quarantined leads (with reasons) are in the `quarantine` collection under run id "
        f"`{result.run_id}`, stage `{STAGE}`.\n\n"
        + (
            f"Great Expectations Data Docs: `{result.data_docs_index}`\n"
            if result.data_docs_index
            else ""
        )
    )


def _retry_unless_gate(_task: Task, _run: TaskRun, state: State) -> bool:
    # The same batch fails the gate again on a retry, and would be quarantined twice.
    return not isinstance(state.data, ValidationGateError)


@task(
    name="validate",
    cache_policy=NO_CACHE,
    persist_result=False,
    retry_condition_fn=_retry_unless_gate,
)
def validate_task(leads: list[Lead], run_id: str) -> list[Lead]:
    """Gate the batch: failing leads to quarantine, results as an artifact and Data Docs;
    the batch fails only when too large a share of it fails."""
    settings = get_settings()
    result = validate_leads(
        leads,
        run_id=run_id,
        max_failing_share=settings.validation_max_failing_share,
        docs_dir=settings.runs_dir / run_id / "data_docs",
    )
    store = shared_store()
    store.quarantine(result.quarantined)
    store.record_stage(run_id, STAGE, result.summary.counts())
    create_markdown_artifact(
        key=artifact_key(run_id),
        markdown=validation_markdown(result),
        description="Lead expectation suite results",
    )
    if result.quarantined:
        get_run_logger().warning(
            "%d of %d leads failed validation and were quarantined (see GET /runs/%s/quarantine)",
            len(result.quarantined), len(leads), run_id,
        )  # fmt: skip
    result.raise_for_threshold()
    return result.leads
