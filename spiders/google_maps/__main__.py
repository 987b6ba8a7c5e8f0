"""`python -m spiders.google_maps FILE...`: same as `python -m spiders.google_maps.parse`."""

import sys

from spiders.google_maps.parse import main

sys.exit(main())
