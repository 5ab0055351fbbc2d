"""The test suite. Its layout mirrors the package: ``tests/<package>/test_<module>.py`` tests
``sslunet/<package>/<module>.py``; ``tests/cli/`` holds the command-line tests (one file per
command, plus the bad-input probes that run every command); ``tests/helpers/`` holds what several
test modules share (no test module imports another). ``tests`` and its folders are packages, so
test files in different folders may share a basename under pytest's default import mode."""
