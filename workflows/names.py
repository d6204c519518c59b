"""Activity and workflow names: explicit, so renaming a Python function never breaks a run."""

SEND_EMAIL = "send_email"
RESERVE_SEND_SLOT = "reserve_send_slot"
CREATE_TASK = "create_task"
ADD_NOTE = "add_note"
UPDATE_FIELDS = "update_fields"
CALL_WEBHOOK = "call_webhook"
PROJECT_RUN = "project_run"

PLAYBOOK_RUN = "PlaybookRun"
SIMULATION = "Simulation"
ACCOUNT = "Account"

CONFIGURATION_ERROR = "ConfigurationError"
"""Error type of a failure only a human can fix (401/403, missing secret): the run pauses."""

LOAD_INDEX = "load_index"
LOAD_ACCOUNT = "load_account"
LOAD_PLAYBOOK = "load_playbook"
APPLY_EVENT = "apply_event"

# Scheduled work: each has a Temporal Schedule created by `touchpoint deploy`.
HEALTH_RECOMPUTE = "HealthRecompute"
"""Recomputes health scores in batches (health.yaml's cron)."""
RECOMPUTE_HEALTH_BATCH = "recompute_health_batch"
DATE_SWEEP = "DateSweep"
"""Hourly: starts date-triggered playbooks whose moment has come."""
SWEEP_DATE_TRIGGERS = "sweep_date_triggers"
SCHEDULE_RUN = "ScheduleRun"
"""One tick of a playbook with a `schedule` trigger."""
ACCOUNT_SYNC = "AccountSync"
"""Pulls accounts from the CRM into the store and emits what changed."""
SYNC_ACCOUNTS_PAGE = "sync_accounts_page"
