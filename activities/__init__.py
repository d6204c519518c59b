"""Side effects, one module per concern: email, CRM, webhooks, the store's projection.

Every side effect is keyed on (run id, step path, recipient, round) and checked against the
store's ledger first, so Temporal's at-least-once activities never do anything twice.
"""
