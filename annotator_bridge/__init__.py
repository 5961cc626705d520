"""Adapters from the al-loop core to the outside world (Label Studio, web, workers)."""
