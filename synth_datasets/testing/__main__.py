"""``python -m synth_datasets.testing``: serve the reference server (see ``serve.py``)."""

import sys

from .serve import main

sys.exit(main())
