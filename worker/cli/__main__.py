"""`python -m worker.cli ...` is `digits ...` (the background stack starts itself this way)."""
import sys

from worker.cli import main

sys.exit(main())
