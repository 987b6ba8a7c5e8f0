"""Lead scoring: features from a `Lead`, the heuristic prior, trained models and their registry.

Pure: no Prefect and no MongoDB, so the pipeline task, the CLI, the API and the tests share it.

**Features** (`LEAD_FEATURES`, one row per lead from `lead_features`): a fixed, documented list
whose names and kinds hash to `LEAD_SCHEMA_HASH`. A trained model records the hash it was trained
on and scores leads only while the hash still matches. Changing what a feature *means* must
change its name (e.g. `completeness_v2`), so the hash changes and stale models stop scoring.

**Heuristic prior** (`HEURISTIC_VERSION`, used until a trained model is promoted): 50 points,
plus or minus each group's points below, clipped to 0-100. The reasons are the three groups that
moved the score most, phrased for people.

| group | points |
|---|---|
| email | verified +20; accept-all +10; webmail, unverified +5; unknown +3; none -10; invalid, disposable -15 |
| phone | E.164 phone +8; none -8 |
| website | +8; none -10 |
| reputation | rating: (rating - 4.0) x 8 x confidence, where confidence = log(1+reviews) / log(51), at most 1 (0.5 when the review count is unknown), no rating -3; plus volume: 2 x log(1+reviews) - 5, between -5 and +8 (none -5) |
| company size | 2 x log10(1+employees), at most +8; unknown 0 (enrichment is optional) |
| business status | permanently closed -60; temporarily closed -20 |
| completeness | (share of key fields present - 0.6) x 20 |
| sources | +3 per source beyond the first, at most +6 |
| opening hours | +2; none -2 |
| category | 0: no prior knowledge of which trade converts; a trained model learns it |

**Trained models**: imputation (median plus missing-value indicators for numbers, a "(missing)"
level for categories), one-hot encoding, scaling, and a sigmoid-calibrated soft vote of a logistic
regression (strong on few rows) and a small, regularised gradient-boosted tree model (finds
interactions once there are enough rows). Score = calibrated probability x 100. A lead's reasons
are the feature groups whose replacement by the training set's typical value (median, or most
common level) changes its probability most.

**Registry** (`ModelRegistry`, under `LEADFLOW_HOME/models/`): one folder per version
(`leads-YYYYmmddTHHMMSS-<hash>` or `table-...`) holding `model.joblib` and `metadata.json`, and a
`promoted.json` pointer naming the promoted "leads" model. Table models (any labelled CSV) are
saved and evaluated but never score leads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from leadflow.settings import Settings, get_settings
from models.lead import Lead, Score
from models.taxonomy import OTHER

logger = logging.getLogger(__name__)

HEURISTIC_VERSION = "heuristic-1"
ModelKind = Literal["leads", "table"]
FeatureKind = Literal["numeric", "binary", "categorical"]

# Fixed seeds: the same data gives the same folds, model and figures on every machine.
SEED = 0
CV_FOLDS = 5
CALIBRATION_FOLDS = 3
# Fewer examples of either outcome than this cannot fill the folds (5 outer, 3 for calibration).
MIN_PER_OUTCOME = 10
TOP_SHARE = 0.10
REASONS_PER_LEAD = 3
# Reasons that moved the score by less than this many points are noise, not reasons.
MIN_REASON_POINTS = 0.5

NO_EMAIL = "none"
MISSING_LEVEL = "(missing)"


# --- features ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind
    group: str  # features explained together: a reason speaks of the group, not of one column
    description: str


LEAD_FEATURES: tuple[Feature, ...] = (
    Feature(
        "completeness", "numeric", "completeness", "Share (0-1) of COMPLETENESS_FIELDS present."
    ),
    Feature("has_phone", "binary", "phone", "1 when the phone parsed to E.164."),
    Feature("has_website", "binary", "website", "1 when the lead has a website."),
    Feature("has_email", "binary", "email", "1 when the lead has any email."),
    Feature(
        "email_status",
        "categorical",
        "email",
        "Verification status of the best email (lead.emails[].status); 'none' without email.",
    ),
    Feature("rating", "numeric", "reputation", "Average rating 0-5; missing when not shown."),
    Feature("review_count", "numeric", "reputation", "Number of reviews; missing when not shown."),
    Feature("log_review_count", "numeric", "reputation", "log(1 + review_count)."),
    Feature("category", "categorical", "category", "Taxonomy slug (models.taxonomy)."),
    Feature(
        "business_status",
        "categorical",
        "business_status",
        "operational, closed_temporarily or closed_permanently; missing when not shown.",
    ),
    Feature(
        "company_employees",
        "numeric",
        "company_size",
        "Employees from enrichment.company_facts; missing when not enriched.",
    ),
    Feature("log_company_employees", "numeric", "company_size", "log(1 + company_employees)."),
    Feature("source_count", "numeric", "sources", "Number of source records (listings) merged."),
    Feature("has_open_hours", "binary", "open_hours", "1 when opening hours are listed."),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in LEAD_FEATURES)
REASON_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in LEAD_FEATURES))

# The key fields behind `completeness`; `name` is left out because every lead has one.
COMPLETENESS_FIELDS: dict[str, Callable[[Lead], bool]] = {
    "address": lambda lead: bool(lead.address.full or lead.address.street),
    "city": lambda lead: bool(lead.address.city),
    "phone": lambda lead: bool(lead.phone),
    "website": lambda lead: bool(lead.website),
    "email": lambda lead: bool(lead.best_email or lead.emails),
    "category": lambda lead: lead.category != OTHER,
    "rating": lambda lead: lead.rating is not None,
    "review_count": lambda lead: lead.review_count is not None,
    "open_hours": lambda lead: bool(lead.open_hours),
    "location": lambda lead: lead.location is not None,
}

# Best first: when a lead has emails but none is marked best, the best status stands for it.
EMAIL_STATUS_ORDER = (
    "valid",
    "accept_all",
    "webmail",
    "unverified",
    "unknown",
    "disposable",
    "invalid",
)


def feature_schema(features: Sequence[Feature] = LEAD_FEATURES) -> list[dict[str, str]]:
    return [{"name": f.name, "kind": f.kind} for f in features]


def schema_hash(schema: Sequence[Mapping[str, str]]) -> str:
    """sha256 of the names and kinds, in order: equal hashes mean the same model inputs."""
    canonical = json.dumps([[s["name"], s["kind"]] for s in schema], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


LEAD_SCHEMA_HASH = schema_hash(feature_schema())


def _email_status(lead: Lead) -> str:
    if lead.emails:
        by_value = {email.value.lower(): email.status for email in lead.emails}
        if lead.best_email and lead.best_email.lower() in by_value:
            return by_value[lead.best_email.lower()]
        return min(by_value.values(), key=EMAIL_STATUS_ORDER.index)
    return "unverified" if lead.best_email else NO_EMAIL


def _business_status(raw: str | None) -> float | str:
    if not raw:
        return np.nan
    return raw.strip().lower().replace(" ", "_").replace("-", "_")


def _feature_row(lead: Lead) -> tuple[Any, ...]:
    facts = lead.enrichment.company_facts if lead.enrichment else None
    employees = facts.employees if facts and facts.employees is not None else np.nan
    reviews = lead.review_count if lead.review_count is not None else np.nan
    email_status = _email_status(lead)
    present = sum(check(lead) for check in COMPLETENESS_FIELDS.values())
    return (
        present / len(COMPLETENESS_FIELDS),
        float(bool(lead.phone)),
        float(bool(lead.website)),
        float(email_status != NO_EMAIL),
        email_status,
        lead.rating if lead.rating is not None else np.nan,
        reviews,
        np.log1p(reviews),
        lead.category or OTHER,
        _business_status(lead.business_status),
        employees,
        np.log1p(employees),
        float(len(lead.sources)),
        float(bool(lead.open_hours)),
    )


def lead_features(leads: Sequence[Lead]) -> pd.DataFrame:
    """One row per lead, the columns of `LEAD_FEATURES` in order; missing values are NaN."""
    frame = pd.DataFrame.from_records(
        [_feature_row(lead) for lead in leads], columns=list(FEATURE_NAMES)
    )
    return _typed(frame, LEAD_FEATURES)


def _typed(frame: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    # Categories as object columns holding NaN (not pandas' str dtype, not None): the form
    # scikit-learn's imputer recognises as missing.
    for f in features:
        if f.kind == "categorical":
            column = frame[f.name].astype(object)
            frame[f.name] = column.where(column.notna(), np.nan)
        else:
            frame[f.name] = frame[f.name].astype("float64")
    return frame


# --- reasons in plain words -------------------------------------------------------------------

_EMAIL_PHRASES = {
    "valid": "verified email",
    "accept_all": "email on an accept-all domain (unconfirmed)",
    "webmail": "webmail address only",
    "unverified": "email not verified yet",
    "unknown": "email could not be verified",
    "disposable": "disposable email address",
    "invalid": "email failed verification",
    NO_EMAIL: "no email",
}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _count(value: Any, one: str, many: str) -> str:
    return f"1 {one}" if value == 1 else f"{int(value):,} {many}"


def _phrase_reputation(row: Mapping[str, Any]) -> str:
    rating, reviews = row["rating"], row["review_count"]
    if _missing(reviews) or reviews == 0:
        return "no reviews" if _missing(rating) else f"{rating:.1f} rating"
    counted = _count(reviews, "review", "reviews")
    return counted if _missing(rating) else f"{rating:.1f} rating from {counted}"


def _phrase_business_status(row: Mapping[str, Any]) -> str:
    status = row["business_status"]
    if _missing(status):
        return "business status unknown"
    return {
        "operational": "open for business",
        "closed_temporarily": "temporarily closed",
        "closed_permanently": "permanently closed",
    }.get(status, f"business status {status.replace('_', ' ')}")


REASON_PHRASES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "completeness": lambda row: f"profile {round(row['completeness'] * 100)}% complete",
    "phone": lambda row: "phone number" if row["has_phone"] else "no phone number",
    "website": lambda row: "has a website" if row["has_website"] else "no website",
    "email": lambda row: _EMAIL_PHRASES.get(row["email_status"], "email status unknown"),
    "reputation": _phrase_reputation,
    "category": lambda row: f"category {str(row['category']).replace('_', ' ')}",
    "business_status": _phrase_business_status,
    "company_size": lambda row: (
        "company size unknown"
        if _missing(row["company_employees"])
        else f"company of {_count(row['company_employees'], 'employee', 'employees')}"
    ),
    "sources": lambda row: (
        "listed in one source only"
        if row["source_count"] <= 1
        else f"listed in {int(row['source_count'])} sources"
    ),
    "open_hours": lambda row: (
        "opening hours listed" if row["has_open_hours"] else "no opening hours"
    ),
}


def top_reasons(impact: np.ndarray, features: pd.DataFrame) -> list[list[str]]:
    """Per lead, the phrases of the (at most three) groups with the largest absolute impact.

    `impact` is leads x REASON_GROUPS, in score points."""
    order = np.argsort(-np.abs(impact), axis=1, kind="stable")[:, :REASONS_PER_LEAD]
    rows = features.to_dict("records")
    return [
        [
            REASON_PHRASES[REASON_GROUPS[g]](rows[i])
            for g in order[i]
            if abs(impact[i, g]) >= MIN_REASON_POINTS
        ]
        for i in range(len(rows))
    ]


# --- heuristic prior ------------------------------------------------------------------------

HEURISTIC_BASE = 50.0
EMAIL_POINTS = {
    "valid": 20.0,
    "accept_all": 10.0,
    "webmail": 5.0,
    "unverified": 5.0,
    "unknown": 3.0,
    NO_EMAIL: -10.0,
    "invalid": -15.0,
    "disposable": -15.0,
}
NEUTRAL_RATING = 4.0
POINTS_PER_STAR = 8.0
REVIEWS_FOR_FULL_CONFIDENCE = 50
CLOSED_POINTS = {"closed_permanently": -60.0, "closed_temporarily": -20.0}


def heuristic_points(features: pd.DataFrame) -> np.ndarray:
    """Points per lead and reason group (leads x REASON_GROUPS): the table in the docstring."""
    reviews = features["review_count"].to_numpy(dtype=float)
    rating = features["rating"].to_numpy(dtype=float)
    employees = features["company_employees"].to_numpy(dtype=float)
    known_reviews = np.nan_to_num(reviews)
    confidence = np.where(
        np.isnan(reviews),
        0.5,
        np.minimum(1.0, np.log1p(known_reviews) / np.log1p(REVIEWS_FOR_FULL_CONFIDENCE)),
    )
    points = {
        "completeness": (features["completeness"].to_numpy(dtype=float) - 0.6) * 20,
        "phone": np.where(features["has_phone"].to_numpy() > 0, 8.0, -8.0),
        "website": np.where(features["has_website"].to_numpy() > 0, 8.0, -10.0),
        "email": features["email_status"].map(EMAIL_POINTS).fillna(0.0).to_numpy(dtype=float),
        "reputation": np.where(
            np.isnan(rating),
            -3.0,
            (np.nan_to_num(rating) - NEUTRAL_RATING) * POINTS_PER_STAR * confidence,
        )
        + np.clip(2 * np.log1p(known_reviews) - 5, -5.0, 8.0),
        "category": np.zeros(len(features)),
        "business_status": features["business_status"]
        .map(CLOSED_POINTS)
        .fillna(0.0)
        .to_numpy(dtype=float),
        "company_size": np.where(
            np.isnan(employees), 0.0, np.minimum(8.0, 2 * np.log10(1 + np.nan_to_num(employees)))
        ),
        "sources": np.clip(3 * (features["source_count"].to_numpy(dtype=float) - 1), 0.0, 6.0),
        "open_hours": np.where(features["has_open_hours"].to_numpy() > 0, 2.0, -2.0),
    }
    return np.column_stack([points[group] for group in REASON_GROUPS])


def heuristic_scores(features: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
    """0-100 scores and top reasons from the heuristic prior."""
    points = heuristic_points(features)
    scores = np.clip(HEURISTIC_BASE + points.sum(axis=1), 0.0, 100.0)
    return scores, top_reasons(points, features)


# --- models and cross-validation ------------------------------------------------------------


def _preprocessor(numeric: Sequence[str], categorical: Sequence[str]) -> ColumnTransformer:
    numbers = Pipeline(
        [
            # The indicator keeps "this was missing" as a signal after the median fills it in.
            # Columns empty in training (no company data yet) are kept, not dropped with a
            # warning on every call: scoring sees the same columns, whatever they hold.
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("scale", StandardScaler()),
        ]
    )
    categories = Pipeline(
        [
            (
                "impute",
                SimpleImputer(
                    strategy="constant", fill_value=MISSING_LEVEL, keep_empty_features=True
                ),
            ),
            # Levels seen in under 0.5% of the rows share one column: fewer, sturdier weights.
            (
                "encode",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist", min_frequency=0.005, sparse_output=False
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [("numeric", numbers, list(numeric)), ("categorical", categories, list(categorical))]
    )


def build_model(numeric: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    """The calibrated classifier (see the module docstring)."""
    vote = VotingClassifier(
        [
            ("linear", LogisticRegression(max_iter=1000)),
            (
                "trees",
                HistGradientBoostingClassifier(
                    learning_rate=0.1,
                    max_iter=100,
                    max_leaf_nodes=6,
                    min_samples_leaf=30,
                    l2_regularization=2.0,
                    early_stopping=False,  # its 10% hold-out is too noisy on small tables
                    random_state=SEED,
                ),
            ),
        ],
        voting="soft",
    )
    calibrated = CalibratedClassifierCV(
        vote,
        method="sigmoid",
        # Shuffled: tables are often in time order (the bank campaign is), and unshuffled
        # calibration folds then learn a flipped mapping from a period unlike the others.
        cv=StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=SEED),
        # One model fit on all rows plus a calibrator fit on out-of-fold predictions: as good as
        # the ensemble of three here, and three times cheaper to score with.
        ensemble=False,
    )
    return Pipeline([("prepare", _preprocessor(numeric, categorical)), ("classify", calibrated)])


def build_baseline(numeric: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    """Plain logistic regression on the same prepared columns: what the model must beat."""
    return Pipeline(
        [
            ("prepare", _preprocessor(numeric, categorical)),
            ("classify", LogisticRegression(max_iter=1000)),
        ]
    )


@dataclass(frozen=True)
class CVMetrics:
    """Cross-validated figures: means over the test folds."""

    roc_auc: float
    roc_auc_std: float
    accuracy: float
    top_decile_conversion: float
    base_rate: float
    n_rows: int
    folds: int

    def as_report(self) -> dict[str, float | int]:
        return {
            "cv_roc_auc": round(self.roc_auc, 4),
            "cv_roc_auc_std": round(self.roc_auc_std, 4),
            "cv_accuracy": round(self.accuracy, 4),
            "top_decile_conversion": round(self.top_decile_conversion, 4),
            "top_decile_lift": round(self.top_decile_conversion / self.base_rate, 2),
            "base_rate": round(self.base_rate, 4),
            "n_rows": self.n_rows,
            "folds": self.folds,
        }


Folds = list[tuple[np.ndarray, np.ndarray]]
# (train rows, test rows) -> probability of conversion for each test row
FoldPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def stratified_folds(labels: np.ndarray) -> Folds:
    splitter = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(labels)), labels))


def top_share_conversion(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Conversion rate among the top-scored 10% (at least one row): what a caller would reach."""
    take = max(1, math.ceil(len(labels) * TOP_SHARE))
    best = np.argsort(-probabilities, kind="stable")[:take]
    return float(labels[best].mean())


def cross_validate(predict: FoldPredictor, labels: np.ndarray, folds: Folds) -> CVMetrics:
    aucs, accuracies, top = [], [], []
    for train_rows, test_rows in folds:
        probabilities = predict(train_rows, test_rows)
        truth = labels[test_rows]
        aucs.append(roc_auc_score(truth, probabilities))
        accuracies.append(accuracy_score(truth, probabilities >= 0.5))
        top.append(top_share_conversion(truth, probabilities))
    return CVMetrics(
        roc_auc=float(np.mean(aucs)),
        roc_auc_std=float(np.std(aucs)),
        accuracy=float(np.mean(accuracies)),
        top_decile_conversion=float(np.mean(top)),
        base_rate=float(labels.mean()),
        n_rows=len(labels),
        folds=len(folds),
    )


def fit(model: Pipeline, features: pd.DataFrame, labels: np.ndarray) -> Pipeline:
    """Fit on one OpenMP thread. The trees are small, so each parallel region holds little
    work and a second thread mostly spins: measured on 2 shared cores, the bank table trains in
    29 s instead of 43 s, and small tables three times faster."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit(features, labels)


def pipeline_predictor(
    factory: Callable[[], Pipeline], features: pd.DataFrame, labels: np.ndarray
) -> FoldPredictor:
    def predict(train_rows: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
        model = fit(clone(factory()), features.iloc[train_rows], labels[train_rows])
        return model.predict_proba(features.iloc[test_rows])[:, 1]

    return predict


# --- labels and labelled tables -------------------------------------------------------------

# Case-insensitive values that mean "no value" in exported CRM and form data.
PLACEHOLDERS = frozenset({"", "select", "unknown", "na", "n/a", "none", "?", "null", "nan"})
POSITIVE_LABELS = frozenset({"1", "yes", "y", "true", "t", "won", "win", "converted", "success"})
NEGATIVE_LABELS = frozenset({"0", "no", "n", "false", "f", "lost", "lose", "failure"})
LABEL_VALUES_HELP = "1/0, yes/no, true/false or won/lost"
# A text column with this many distinct values, most of them unique, names rows (ids, notes).
IDENTIFIER_MIN_DISTINCT = 50
IDENTIFIER_UNIQUE_SHARE = 0.5


class TrainingDataError(ValueError):
    """Input that cannot be trained on; `source` names the input at fault (data, label, ...)."""

    def __init__(self, message: str, source: str) -> None:
        super().__init__(message)
        self.source = source


def mask_placeholders(column: pd.Series) -> pd.Series:
    """Strip text and turn placeholder values (`PLACEHOLDERS`, any case) into NaN."""
    text = column.astype(object).where(column.notna(), "").astype(str).str.strip()
    return text.astype(object).where(~text.str.lower().isin(PLACEHOLDERS), np.nan)


def _label_token(value: Any) -> str:
    text = str(value).strip().lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number in (0.0, 1.0) else text


def binary_labels(values: pd.Series, column: str, *, source: str = "label") -> pd.Series:
    """1/0 per row (NaN where the label is missing); unusable labels raise TrainingDataError."""
    masked = mask_placeholders(values)
    tokens = masked.dropna().map(_label_token)
    unexpected = sorted(set(tokens) - POSITIVE_LABELS - NEGATIVE_LABELS)
    if unexpected:
        shown = ", ".join(repr(v) for v in unexpected[:8])
        raise TrainingDataError(
            f"column {column!r} is not a yes/no outcome: found {shown}"
            f"{' and more' if len(unexpected) > 8 else ''} (expected {LABEL_VALUES_HELP})",
            source,
        )
    labels = pd.Series(np.nan, index=values.index, dtype="float64")
    labels.loc[tokens.index] = tokens.isin(POSITIVE_LABELS).astype("float64")
    return labels


def check_outcome_counts(labels: np.ndarray, what: str, source: str) -> None:
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if min(positives, negatives) < MIN_PER_OUTCOME:
        raise TrainingDataError(
            f"{what}: {positives} converted and {negatives} not converted; "
            f"training needs at least {MIN_PER_OUTCOME} of each",
            source,
        )


@dataclass
class LabelledTable:
    features: pd.DataFrame
    labels: np.ndarray
    label: str
    numeric: list[str]
    categorical: list[str]
    excluded: list[str]
    ignored: dict[str, str]  # column -> why it was left out
    unlabelled_rows: int

    @property
    def schema(self) -> list[dict[str, str]]:
        return [
            {"name": name, "kind": "numeric" if name in self.numeric else "categorical"}
            for name in self.features.columns
        ]


def read_labelled_table(path: Path, label: str, exclude: Sequence[str] = ()) -> LabelledTable:
    """A CSV as features and 0/1 labels: kinds detected, placeholders masked, rows without a
    label dropped; identifier-like and constant columns left out (and said so)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"{path} is not a readable CSV table: {exc}", "data") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    if label not in raw.columns:
        raise TrainingDataError(
            f"no column {label!r} in {path.name}; columns: {', '.join(raw.columns)}", "label"
        )
    unknown = [c for c in exclude if c not in raw.columns]
    if unknown:
        raise TrainingDataError(
            f"no column {', '.join(map(repr, unknown))} in {path.name} to exclude; "
            f"columns: {', '.join(raw.columns)}",
            "exclude",
        )
    if label in exclude:
        raise TrainingDataError(f"the label column {label!r} cannot be excluded", "exclude")

    labels = binary_labels(raw[label], label)
    labelled = labels.notna().to_numpy()
    check_outcome_counts(labels[labelled].to_numpy(), f"label column {label!r}", "label")

    features = pd.DataFrame(index=raw.index[labelled])
    numeric: list[str] = []
    categorical: list[str] = []
    ignored: dict[str, str] = {}
    for name in raw.columns:
        if name == label or name in exclude:
            continue
        column = mask_placeholders(raw[name])[labelled]
        present = column.dropna()
        distinct = present.nunique()
        # One value plus gaps still says something (known vs missing); one value everywhere
        # (or nothing at all) does not.
        if distinct == 0 or (distinct == 1 and len(present) == len(column)):
            ignored[name] = "the same value in every row" if distinct else "empty in every row"
            continue
        as_numbers = pd.to_numeric(present, errors="coerce")
        if as_numbers.notna().all():
            features[name] = pd.to_numeric(column, errors="coerce").astype("float64")
            numeric.append(name)
        elif distinct >= IDENTIFIER_MIN_DISTINCT and distinct > IDENTIFIER_UNIQUE_SHARE * len(
            present
        ):
            ignored[name] = f"{distinct} distinct texts: an identifier or free text"
        else:
            features[name] = column
            categorical.append(name)
    if features.shape[1] == 0:
        raise TrainingDataError(f"{path.name} has no usable feature columns", "data")
    return LabelledTable(
        features=features.reset_index(drop=True),
        labels=labels[labelled].to_numpy(dtype=int),
        label=label,
        numeric=numeric,
        categorical=categorical,
        excluded=list(exclude),
        ignored=ignored,
        unlabelled_rows=int((~labelled).sum()),
    )


@dataclass(frozen=True)
class Outcomes:
    """Outcomes from a `lead_id,outcome` CSV: 1 converted, 0 not."""

    by_lead: dict[str, int]
    unlabelled_rows: int


def read_outcomes(path: Path) -> Outcomes:
    """A lead with several rows counts as converted when any row says so."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    columns = {name.strip().lower(): name for name in (rows[0].keys() if rows else ())}
    if "lead_id" not in columns or "outcome" not in columns:
        raise TrainingDataError(
            f"{path.name} needs the columns lead_id,outcome (found: {', '.join(columns) or 'none'})",
            "outcomes",
        )
    frame = pd.DataFrame(
        {
            "lead_id": [(row[columns["lead_id"]] or "").strip() for row in rows],
            "outcome": [row[columns["outcome"]] for row in rows],
        }
    )
    frame["label"] = binary_labels(frame["outcome"], "outcome", source="outcomes")
    usable = frame[frame["label"].notna() & (frame["lead_id"] != "")]
    by_lead = usable.groupby("lead_id")["label"].max().astype(int).to_dict()
    return Outcomes(by_lead=by_lead, unlabelled_rows=len(frame) - len(usable))


# --- registry -------------------------------------------------------------------------------

ARTIFACT_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
PROMOTED_FILE = "promoted.json"


@dataclass(frozen=True)
class ModelInfo:
    version: str
    kind: ModelKind
    path: Path
    metadata: dict[str, Any]

    @property
    def schema_hash(self) -> str:
        return str(self.metadata["feature_schema_hash"])

    @property
    def cv_roc_auc(self) -> float:
        return float(self.metadata["metrics"]["cv_roc_auc"])


@dataclass(frozen=True)
class LeadScorer:
    """A loaded "leads" model: the fitted pipeline and each feature's typical value."""

    version: str
    pipeline: Pipeline
    typical_values: dict[str, Any]


def _json_ready(value: Any) -> Any:
    """Metadata as strict JSON: NaN becomes null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    # Readers (a scoring run) never see half a file: write aside, then rename over.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(
        json.dumps(_json_ready(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    os.replace(temporary, path)


@lru_cache(maxsize=4)
def _load_artifact(path: str, modified_ns: int) -> dict[str, Any]:
    # Keyed on the file's mtime too: a batch after a re-save does not get a stale model.
    return joblib.load(path)


class ModelRegistry:
    """Versioned model folders under one root, plus the promoted "leads" pointer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelRegistry:
        return cls((settings or get_settings()).home_dir / "models")

    def save(
        self,
        kind: ModelKind,
        artifact: dict[str, Any],
        metadata: dict[str, Any],
        *,
        fingerprint: str,
        created_at: datetime | None = None,
    ) -> ModelInfo:
        """Write a new version; `fingerprint` identifies the training data."""
        created_at = created_at or datetime.now(UTC)
        # The creation time (to the microsecond) in the hash: retraining on the same data in
        # the same second still gives a new version.
        digest = hashlib.sha256(f"{fingerprint}:{created_at.isoformat()}".encode()).hexdigest()
        version = f"{kind}-{created_at:%Y%m%dT%H%M%S}-{digest[:6]}"
        metadata = {
            "version": version,
            "kind": kind,
            "created_at": created_at.isoformat(),
            "training_data_sha256": fingerprint,
            "sklearn_version": sklearn.__version__,
            **metadata,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{version}.partial"
        staging.mkdir()
        try:
            joblib.dump(artifact, staging / ARTIFACT_FILE)
            _write_json_atomically(staging / METADATA_FILE, metadata)
            # A version folder appears complete or not at all.
            staging.rename(self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelInfo(version, kind, self.root / version, _json_ready(metadata))

    def info(self, version: str) -> ModelInfo:
        path = self.root / version
        try:
            metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(f"no model {version!r} in {self.root}") from None
        return ModelInfo(version, metadata["kind"], path, metadata)

    def load(self, version: str) -> tuple[dict[str, Any], ModelInfo]:
        info = self.info(version)
        artifact_path = info.path / ARTIFACT_FILE
        return _load_artifact(str(artifact_path), artifact_path.stat().st_mtime_ns), info

    def versions(self, kind: ModelKind | None = None) -> list[ModelInfo]:
        """Every saved version (of one kind), oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            self.info(path.name)
            for path in self.root.iterdir()
            # Dot folders are saves in progress (or interrupted ones), not versions.
            if path.is_dir() and not path.name.startswith(".") and (path / METADATA_FILE).is_file()
        ]
        return sorted(
            (info for info in found if kind is None or info.kind == kind),
            key=lambda info: info.metadata["created_at"],
        )

    def promoted(self) -> ModelInfo | None:
        """The promoted "leads" model, if any."""
        try:
            pointer = json.loads((self.root / PROMOTED_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        version = pointer["leads"]["version"]
        try:
            return self.info(version)
        except KeyError:
            # Deleted by hand: treat as nothing promoted, so the next better model replaces it.
            logger.warning("the promoted model %s is missing from %s", version, self.root)
            return None

    def promote(self, version: str, reason: str) -> None:
        info = self.info(version)
        if info.kind != "leads":
            raise ValueError(f"{version} is a {info.kind} model: only leads models score leads")
        current = self.promoted()
        _write_json_atomically(
            self.root / PROMOTED_FILE,
            {
                "leads": {
                    "version": version,
                    "promoted_at": datetime.now(UTC).isoformat(),
                    "reason": reason,
                    "replaces": current.version if current else None,
                }
            },
        )

    def active_lead_scorer(self) -> LeadScorer | None:
        """The promoted model when it can score today's features; None means the heuristic.

        A promoted model that cannot be used (other feature schema, unreadable files) is logged
        and skipped rather than failing the pipeline: each lead records which model scored it.
        """
        try:
            info = self.promoted()
            if info is None:
                return None
            if info.schema_hash != LEAD_SCHEMA_HASH:
                logger.warning(
                    "promoted model %s was trained on feature schema %s, not the current %s: "
                    "scoring with %s",
                    info.version, info.schema_hash[:12], LEAD_SCHEMA_HASH[:12], HEURISTIC_VERSION,
                )  # fmt: skip
                return None
            artifact, _ = self.load(info.version)
        # Unpickling can fail in many ways (a truncated file, a library that moved a class):
        # all of them mean "cannot use this model", none of them may stop a pipeline run.
        except Exception as exc:
            logger.warning("promoted model unusable (%r): scoring with %s", exc, HEURISTIC_VERSION)
            return None
        return LeadScorer(info.version, artifact["pipeline"], artifact["typical_values"])


# --- training --------------------------------------------------------------------------------


def _fingerprint(features: pd.DataFrame, labels: np.ndarray) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(features, index=False).to_numpy())
    digest.update(np.ascontiguousarray(labels, dtype=np.int8).tobytes())
    return digest.hexdigest()


def _typical_values(features: pd.DataFrame) -> dict[str, Any]:
    """Median of each number and most common level of each category: the "typical lead"."""
    typical: dict[str, Any] = {}
    for name in features.columns:
        column = features[name]
        if pd.api.types.is_numeric_dtype(column):
            typical[name] = float(column.median()) if column.notna().any() else np.nan
        else:
            modes = column.dropna().mode()
            typical[name] = modes.iloc[0] if len(modes) else np.nan
    return typical


@dataclass
class TableTrainingResult:
    info: ModelInfo
    metrics: CVMetrics
    baseline: CVMetrics
    table: LabelledTable

    @property
    def beats_baseline(self) -> bool:
        return self.metrics.roc_auc > self.baseline.roc_auc

    def report(self) -> dict[str, Any]:
        return {
            "model_version": self.info.version,
            "kind": "table",
            "model_path": str(self.info.path),
            "label": self.table.label,
            **self.metrics.as_report(),
            "baseline": {"model": "logistic regression", **self.baseline.as_report()},
            "beats_baseline": self.beats_baseline,
            "numeric_columns": self.table.numeric,
            "categorical_columns": self.table.categorical,
            "excluded_columns": self.table.excluded,
            "ignored_columns": self.table.ignored,
            "unlabelled_rows": self.table.unlabelled_rows,
        }


def train_table(table: LabelledTable, registry: ModelRegistry, source: str) -> TableTrainingResult:
    """Cross-validate the model and the baseline on the same folds, then save the model fit on
    every row as a "table" model (never promoted: its columns are not a lead's features)."""
    folds = stratified_folds(table.labels)

    def model_factory() -> Pipeline:
        return build_model(table.numeric, table.categorical)

    def baseline_factory() -> Pipeline:
        return build_baseline(table.numeric, table.categorical)

    metrics = cross_validate(
        pipeline_predictor(model_factory, table.features, table.labels), table.labels, folds
    )
    baseline = cross_validate(
        pipeline_predictor(baseline_factory, table.features, table.labels), table.labels, folds
    )
    pipeline = fit(model_factory(), table.features, table.labels)
    info = registry.save(
        "table",
        {"pipeline": pipeline, "feature_names": list(table.features.columns)},
        {
            "source": source,
            "label": table.label,
            "training_rows": len(table.labels),
            "positives": int(table.labels.sum()),
            "metrics": metrics.as_report(),
            "baseline": {"model": "logistic regression", **baseline.as_report()},
            "feature_schema": table.schema,
            "feature_schema_hash": schema_hash(table.schema),
            "excluded_columns": table.excluded,
            "ignored_columns": table.ignored,
        },
        fingerprint=_fingerprint(table.features, table.labels),
    )
    return TableTrainingResult(info, metrics, baseline, table)


@dataclass
class LeadTrainingResult:
    info: ModelInfo
    metrics: CVMetrics
    heuristic: CVMetrics  # the heuristic prior on the same labelled leads and folds
    incumbent_version: str
    incumbent_roc_auc: float
    promoted: bool
    decision: str  # why it was or was not promoted, in plain words
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "model_version": self.info.version,
            "kind": "leads",
            "model_path": str(self.info.path),
            **self.metrics.as_report(),
            "heuristic": {"model": HEURISTIC_VERSION, **self.heuristic.as_report()},
            "incumbent": {"model": self.incumbent_version, "cv_roc_auc": self.incumbent_roc_auc},
            "promoted": self.promoted,
            "decision": self.decision,
            "notes": self.notes,
        }


def _heuristic_predictor(features: pd.DataFrame) -> FoldPredictor:
    probabilities = heuristic_scores(features)[0] / 100.0

    def predict(_train_rows: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
        return probabilities[test_rows]  # nothing to fit: the prior is fixed

    return predict


def train_lead_model(
    leads: Sequence[Lead], labels: Sequence[int], registry: ModelRegistry, *, source: str = ""
) -> LeadTrainingResult:
    """Cross-validate, save as a "leads" model, and promote it only when its CV ROC AUC beats the
    incumbent's: the promoted model's recorded CV ROC AUC, or, when no usable model is promoted,
    the heuristic prior's on the same labelled leads and folds."""
    y = np.asarray(labels, dtype=int)
    check_outcome_counts(y, "the labelled leads", "outcomes")
    features = lead_features(leads)
    numeric = [f.name for f in LEAD_FEATURES if f.kind != "categorical"]
    categorical = [f.name for f in LEAD_FEATURES if f.kind == "categorical"]

    def model_factory() -> Pipeline:
        return build_model(numeric, categorical)

    folds = stratified_folds(y)
    metrics = cross_validate(pipeline_predictor(model_factory, features, y), y, folds)
    heuristic = cross_validate(_heuristic_predictor(features), y, folds)
    pipeline = fit(model_factory(), features, y)
    typical = _typical_values(features)
    info = registry.save(
        "leads",
        {"pipeline": pipeline, "typical_values": typical},
        {
            "source": source,
            "label": "outcome",
            "training_rows": len(y),
            "positives": int(y.sum()),
            "metrics": metrics.as_report(),
            "heuristic": {"model": HEURISTIC_VERSION, **heuristic.as_report()},
            "feature_schema": feature_schema(),
            "feature_schema_hash": LEAD_SCHEMA_HASH,
            "typical_values": typical,
            "excluded_columns": [],
        },
        fingerprint=_fingerprint(features, y),
    )

    notes: list[str] = []
    current = registry.promoted()
    if current is not None and current.schema_hash == LEAD_SCHEMA_HASH:
        incumbent_version, incumbent_auc = current.version, current.cv_roc_auc
    else:
        if current is not None:
            notes.append(
                f"promoted model {current.version} no longer matches the lead features; "
                f"compared with {HEURISTIC_VERSION} instead"
            )
        incumbent_version, incumbent_auc = HEURISTIC_VERSION, heuristic.roc_auc
    promoted = metrics.roc_auc > incumbent_auc
    comparison = f"CV ROC AUC {metrics.roc_auc:.4f} vs {incumbent_auc:.4f} of {incumbent_version}"
    if promoted:
        decision = f"promoted: {comparison}"
        registry.promote(info.version, decision)
    else:
        decision = f"not promoted, {incumbent_version} stays: {comparison}"
    return LeadTrainingResult(
        info, metrics, heuristic, incumbent_version, incumbent_auc, promoted, decision, notes
    )


# --- scoring ---------------------------------------------------------------------------------


def model_scores(scorer: LeadScorer, features: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
    """0-100 scores and reasons: each reason group's impact is how much the probability falls
    (or rises) when that group's features are replaced by the typical lead's values."""
    columns = list(FEATURE_NAMES)
    probability = scorer.pipeline.predict_proba(features[columns])[:, 1]
    impact = np.empty((len(features), len(REASON_GROUPS)))
    for index, group in enumerate(REASON_GROUPS):
        typical = features[columns].copy()
        for f in LEAD_FEATURES:
            if f.group == group:
                # Keep the column's dtype: a NaN level must stay an object (category) column.
                typical[f.name] = np.full(
                    len(features),
                    scorer.typical_values[f.name],
                    dtype=object if f.kind == "categorical" else float,
                )
        impact[:, index] = (probability - scorer.pipeline.predict_proba(typical)[:, 1]) * 100
    return probability * 100, top_reasons(impact, features)


def score_leads(leads: Sequence[Lead], registry: ModelRegistry | None = None) -> str:
    """Write `lead.score` on every lead; returns the model version that scored them.

    The promoted "leads" model scores when its feature schema matches `LEAD_FEATURES`;
    otherwise the heuristic prior does.
    """
    scorer = (registry or ModelRegistry.from_settings()).active_lead_scorer()
    version = scorer.version if scorer else HEURISTIC_VERSION
    if not leads:
        return version
    features = lead_features(leads)
    scores, reasons = model_scores(scorer, features) if scorer else heuristic_scores(features)
    scored_at = datetime.now(UTC)
    for lead, value, why in zip(leads, scores, reasons, strict=True):
        lead.score = Score(
            value=round(float(value), 1), reasons=why, model_version=version, scored_at=scored_at
        )
    return version
