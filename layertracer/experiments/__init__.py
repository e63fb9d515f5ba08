"""Continued-pre-training trials and experiments, and the statistics that compare allocations."""
