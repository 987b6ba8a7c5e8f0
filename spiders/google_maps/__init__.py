"""Parsers for Google Maps payloads (pure functions, no Scrapy): see `parse`."""
