"""Leadflow's spiders; Scrapy discovers them through SPIDER_MODULES."""
