"""`python -m paris_assets.bench [--only STAGE ...]`: every benchmark, or the ones named (bench/main.py)."""

import sys

from .main import main

sys.exit(main())
