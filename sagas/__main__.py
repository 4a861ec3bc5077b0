"""``python -m sagaline.sagas``: create the reference sagas' tables (:func:`.tables.main`)."""

from sagaline.sagas.tables import main

raise SystemExit(main())
