"""The orchestrator: the pure core (``core``), the Kafka runtime (``runtime``), the client,
replay and audit, the command line (``cli``), and the tools behind it (``devenv``,
``bench``, ``demo``, ``chaos``)."""
