"""Privacy for fedsilo silos: DP-SGD with a persistent budget, and encryption at rest.

- :mod:`privacy.dp`: make a model, optimizer and loader private (Opacus), count epsilon.
- :mod:`privacy.ledger`: a silo's epsilon across rounds and runs; refuses to overspend.
- :mod:`privacy.crypto`: the AES-256-GCM chunked envelope and its single DecryptionError.
- :mod:`privacy.keys`: key files, FEDSILO_KEY, passphrases, the resolver, rotation.
- :mod:`privacy.store`: atomic, encrypted save/load of state dicts and JSON.

Submodules are imported on demand (``from privacy import store``) so that a command
that only reads files does not pay for importing Opacus. Nothing here imports Flower.
"""
