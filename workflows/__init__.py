"""Deterministic workflow code only: the playbook interpreter, accounts, simulations."""
