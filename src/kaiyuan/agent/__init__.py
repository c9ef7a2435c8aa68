"""The assistant agent: ``loop`` (model -> tool calls -> results -> model) and ``traces``
(every step stored in SQLite under KAIYUAN_HOME)."""
