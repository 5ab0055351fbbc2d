"""Helpers shared by several test modules (none of them is collected: no ``test_`` names, and
no test module imports another test module).

- :mod:`.datasets`: the one builder of small synthetic datasets (raw files with a chosen case
  anatomy and geometry, planning and preprocessing, shrunk plans) and the session-cached
  planned/trained homes built with it (tiny dataset, pretraining stack dataset).
- :mod:`.cli`: the CLI-probe harness: run a command (subprocess or in process) and check a
  clean refusal (exit 2, one error line naming the offender, no traceback, nothing written).
- :mod:`.damage`: ways to damage a dataset's files or plans, for the bad-input tests.
- :mod:`.models`: a seeded random model saved in the fine-tuning results layout.
- :mod:`.paths`: the repository root and the real-data folder (``../shared/data``).
- :mod:`.feature_maps`: the conv feature-map count measured on the real modules (an oracle of
  the planner's memory proxy); :mod:`.oracles`: other naive reference implementations.
- data for the tests of one package: :mod:`.fingerprints` (planning), :mod:`.networks`
  (hand-written plans), :mod:`.patches` (preprocessed cases for sampling and loading),
  :mod:`.pretraining` (objective setups), :mod:`.label_folders` (evaluation),
  :mod:`.study_rows` (study statistics).

Fixtures built on them are in ``tests/conftest.py``.
"""
