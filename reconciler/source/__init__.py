"""Where fleet repo files come from: a working tree, or a Git revision read without checkout.

A `Snapshot` lists the YAML files of a repo at one point in time with their Git
blob ids, so callers can cache by content. Only `git.py` talks to pygit2.
"""
