"""Evaluation: top-1/top-5 and GMACs of every inference strategy, and the reports."""
