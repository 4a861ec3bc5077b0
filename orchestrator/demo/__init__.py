"""The demo harness behind ``sagaline demo``: reference sagas under SIGKILLs, checked at the end."""
