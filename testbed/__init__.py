"""Local services the tests and the benchmark start for themselves (PostgreSQL, Redis); not the product."""
