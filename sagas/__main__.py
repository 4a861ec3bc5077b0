"""``python -m sagas``: create the reference sagas' tables (see :func:`sagas.tables.main`)."""

from sagas.tables import main

raise SystemExit(main())
