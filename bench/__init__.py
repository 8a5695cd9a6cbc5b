"""consentry benchmarks: `make bench` (= `python -m bench`) starts the stack and measures it."""
