"""``python -m fusedseq.bench``: the same as ``python -m fusedseq bench``."""
import sys

from .cli import main

sys.exit(main())
