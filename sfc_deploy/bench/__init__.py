"""Timing, memory, FLOP accounting, reports and plots."""
