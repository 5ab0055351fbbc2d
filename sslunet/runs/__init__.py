"""Run folders: the one home of their layout (file names, folders), their state (new,
interrupted, finished), how ``--init`` names a checkpoint, and the checkpoint format.

Every stage that writes or reads a run folder (fine-tuning, pretraining, prediction, studies)
goes through :mod:`sslunet.runs.layout` and :mod:`sslunet.runs.checkpoint`; no other module
spells a run file's name.
"""
