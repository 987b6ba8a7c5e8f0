"""What every search spider takes from `SearchSpec`: `-a category= -a location= -a limit=`."""

from __future__ import annotations

from typing import Any

import scrapy


class SearchSpider(scrapy.Spider):
    """Base of the spiders that run one search: the arguments as the pipeline passes them."""

    def __init__(
        self,
        category: str = "",
        location: str = "",
        limit: str | int = "0",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.category = (category or "").strip()
        self.location = (location or "").strip()
        try:
            self.limit = max(0, int(limit or 0))  # 0 = no limit
        except ValueError as exc:
            raise ValueError(f"limit must be a whole number, got {limit!r}") from exc
