"""Parsers for the business directory's pages (pure functions, no Scrapy)."""
