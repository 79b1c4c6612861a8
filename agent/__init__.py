"""genofed.agent."""
