"""Developer tools: real OpenStack components to run voltrace against (never imported by it)."""
