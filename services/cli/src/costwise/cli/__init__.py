"""The ``costwise`` command: publish requests, read results, and run the embedded stack (``costwise up``)."""
