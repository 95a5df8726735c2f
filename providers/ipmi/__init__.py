"""IPMI BMCs: the pyghmi client and provider for real ones, and a simulator farm for tests and `fleet lab`.

Only `client.py` talks to real BMCs; `simulator.py` serves simulated ones on the endpoints it is given.
"""
