"""``python -m sagaline.orchestrator.cli``: the ``sagaline`` command without its script."""

import sys

from sagaline.orchestrator.cli.main import main

sys.exit(main())
