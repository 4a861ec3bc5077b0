"""An ``--app`` module that fails while it is imported (test_cli_errors)."""

raise RuntimeError("the app is broken")
