"""The lab: simulated infrastructure for tests, benchmarks and `fleet lab`, on this machine's loopback.

BMCs (`bmc`), hypervisors (`hypervisors`), Kubernetes API servers (`apiserver`) and SSH hosts
(`sshd`), each a process started as `python -m lab.X serve` (`serving` holds what they share);
`control` starts and stops them for a fleet repo, and `cli` is the `fleet lab` command.
Production code (`reconciler`, `providers`) never imports the lab.
"""
