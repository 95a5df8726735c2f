"""libvirt hypervisors: the VirtualMachine provider.

The simulated hypervisors (libvirtd's test driver) of tests and the lab are the lab's (`lab.hypervisors`).
"""
