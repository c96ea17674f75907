"""Running experiments: intake (validate and record) and execution (build,
baseline, sandbox, collect, verdict, teardown)."""
