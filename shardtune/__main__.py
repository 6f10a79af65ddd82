"""``python -m shardtune <verb> ...``: the same command line as the ``shardtune`` script."""

import sys

from shardtune.cli import main

sys.exit(main())
