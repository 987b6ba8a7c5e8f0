"""The demo business directory: a seeded generator, its HTML pages and the businesses' websites.

`sandbox.directory.generate.generate(seed, n_businesses)` builds the whole world (businesses,
the directory's listings with the mess real listings have, and the ground truth of which
listings are the same business); `sandbox.directory.site` renders it as HTML for
`sandbox.server`. Nothing is re-exported here, so `python -m sandbox.directory.generate` runs
its module cleanly.
"""
