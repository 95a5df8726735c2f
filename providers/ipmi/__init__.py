"""IPMI BMCs: the pyghmi client and the provider.

Only `client.py` talks to BMCs; the simulated ones of tests and `fleet lab` are the lab's (`lab.bmc`).
"""
