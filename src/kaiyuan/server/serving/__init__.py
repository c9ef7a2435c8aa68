"""Serving text generation: a request -> engine calls -> a response body or stream chunks.

Shared by chat and completions: ``sampling`` maps a request's fields to the engine's
parameters, ``streams`` admits and merges the choices' generations, ``respond`` returns a body
or a stream; ``chat`` and ``completions`` assemble each API's choices. Routes stay thin.
"""
