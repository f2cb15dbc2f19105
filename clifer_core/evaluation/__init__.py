"""Datasets, protocols, metrics and reports for evaluating CLIFER."""
