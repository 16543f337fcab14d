"""The engine: function definitions, step commands, the replayer and its helpers.

Pure logic: nothing here does I/O of its own or reads a clock, beyond running the
user's step handlers.
"""
