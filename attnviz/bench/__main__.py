"""``python -m attnviz.bench``: see ``attnviz/bench/cli.py``."""
import sys

from .cli import main

sys.exit(main())
