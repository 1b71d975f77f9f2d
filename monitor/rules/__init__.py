"""The pure rules: decisions on frames and values, `now` passed in. No clock, network or database
(tests/test_architecture.py checks the whole folder)."""
