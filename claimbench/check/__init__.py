"""Checks: per-seed metrics of the runs a claim needs -> verdicts with statistics."""
