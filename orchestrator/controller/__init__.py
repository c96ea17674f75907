"""The reconciling controller: observe, plan (pure), apply; one leader at a time."""
