"""Parts of bench_operator_scale.py, one job each."""
