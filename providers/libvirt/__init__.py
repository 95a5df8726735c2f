"""libvirt hypervisors: the VirtualMachine provider, and simulated hypervisors (libvirtd's test driver)."""
