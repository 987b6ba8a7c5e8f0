"""The Scrapy project: settings, items, item pipelines, spiders and pure payload parsers."""
