"""Providers observe and change live infrastructure for the engine.

The engine reaches them only through `providers.base` and `providers.registry`;
each third-party SDK is imported by exactly one provider module.
"""
