"""Reference agent sagas."""
