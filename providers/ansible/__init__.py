"""Operating-system configuration with Ansible: the inventory of a fleet, playbook runs, the provider."""
