"""The fleet repo model: documents, their YAML loader, and every check on them.

This package turns bytes into validated documents and diagnostics. It never
reads Git or the filesystem itself; callers hand it file contents.
"""
