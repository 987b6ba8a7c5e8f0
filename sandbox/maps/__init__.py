"""The sandbox Google Maps site (host `maps.test`).

`payload` builds Google-format payloads from the demo directory's businesses (pure
functions); `site` serves them as a result-list SPA, a search API and place pages, with
latency and a reCAPTCHA gate. See `sandbox.maps.site` for the URLs.
"""
