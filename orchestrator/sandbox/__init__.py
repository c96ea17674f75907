"""Files that are copied into sandbox images (not imported by the orchestrator)."""
