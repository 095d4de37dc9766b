"""Prefect flows: each file wires the tasks of one business step."""
