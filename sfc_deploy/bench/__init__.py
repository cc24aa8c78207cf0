"""Timing, memory, FLOP accounting, reports and plots.

``sfc-deploy bench`` lives here as a library: :mod:`.suite` exports or reuses the model and runs
each strategy in a fresh worker process (:mod:`.worker`), :mod:`.machine` says what it ran on and
measures the matrix-multiply peak, :mod:`.report` derives the ratios and renders the tables,
:mod:`.plot` draws them, :mod:`.flops` counts GMACs and :mod:`.paper` holds the paper's figures.
"""
