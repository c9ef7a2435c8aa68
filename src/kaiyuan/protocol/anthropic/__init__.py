"""The Anthropic Messages API: wire shapes (see server/serving/messages.py)."""
