"""Helpers shared by several test modules (none of them is collected: no ``test_`` names).

- :mod:`.paths`: the repository root and the real-data folder (``../shared/data``).
- :mod:`.datasets`: the one builder of small synthetic datasets (raw files, planning, shrunk
  plans, session-cached planned/trained homes).
- :mod:`.cli`: the CLI-probe harness (run a command, check "exit 2, one error line naming the
  file, no traceback, nothing written").
- :mod:`.models`: a seeded random model saved in the fine-tuning results layout.
- :mod:`.feature_maps`: the conv feature-map count measured on the real modules (an oracle).
- the others: small oracles and fixtures' data shared by the modules of one package.
"""
