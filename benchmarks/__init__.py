"""Genesis benchmarks: figures printed beside a named baseline, as ratios."""
