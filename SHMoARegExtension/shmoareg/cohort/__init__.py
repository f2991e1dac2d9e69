"""Cohorts: many pairs registered as one job (``batch``, and ``evaluate``'s pairs), dealt over torchrun's ranks,
with tables and an HTML report."""
