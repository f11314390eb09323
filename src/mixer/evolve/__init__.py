"""Evol-Instruct: operators (data), a cached and budgeted teacher client, elimination rules, the round engine."""
