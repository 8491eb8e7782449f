"""Service functions: the one place per resource where SQL is written.

Routes, the CLI and the demo loader all call these, so every entity has one write path.
"""
