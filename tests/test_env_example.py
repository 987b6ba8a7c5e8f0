"""`.env.example` is the one documented list of settings: every field of `Settings` is in it."""

from __future__ import annotations

import re
from pathlib import Path

from leadflow.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_every_setting_is_documented_in_env_example() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    named = set(re.findall(r"^#?\s*(LEADFLOW_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    fields = {f"LEADFLOW_{name.upper()}" for name in Settings.model_fields}
    assert fields - named == set(), "settings missing from .env.example"
    assert named - fields == set(), ".env.example names settings that do not exist"
