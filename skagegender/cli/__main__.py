"""``python -m skagegender.cli``: the ``skagegender`` command."""

import sys

from . import main

sys.exit(main())
