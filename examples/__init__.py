"""Worked custom models (run config ``model = "examples.<module>:build"``); see
docs/simulation.md, "Your own model"."""
