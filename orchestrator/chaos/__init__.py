"""Chaos tooling: real step functions with observable effects, storms of faults."""
