"""Benchmarks printed by `make bench`. Each module's `main()` prints figures beside their targets."""
