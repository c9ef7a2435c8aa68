"""The Ollama API: wire shapes (see server/serving/ollama.py)."""
