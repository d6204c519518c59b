-- Runs once, when the PostgreSQL volume is created. Temporal's auto-setup image creates its own
-- databases (temporal, temporal_visibility); Touchpoint's store gets one of its own.
CREATE DATABASE touchpoint;
