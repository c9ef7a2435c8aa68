"""OpenAI's API surface: one module per resource, requests and responses both typed.

Request fields no model knows are dropped with one warning, as vLLM does, or refused under
``strict_params`` (``protocol/fields.py``): either way a client can never smuggle in e.g. a chat
template, and NaN/inf are rejected in every float. Responses
and stream chunks are typed too; streamed ones are written with ``exclude_unset``, so a field
left unset is absent from the wire (a chunk's delta carries only what changed).
"""
