"""`touchpoint preview`: render every email a playbook can send for an account (filled in by #5)."""
