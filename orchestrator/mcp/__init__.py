"""Genesis as an MCP server (tools and resources for AI assistants); see docs/mcp.md."""
