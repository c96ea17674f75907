"""The HTTP API, the web UI and MCP over HTTP, served by ``genesis serve`` (docs/api.md)."""
