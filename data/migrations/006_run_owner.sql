-- 006: which process owns a running stage run, so that a run whose process died (SIGKILL, a crash,
-- a lost machine) is found and marked `abandoned` the next time the store is opened for writing,
-- instead of staying `running` forever. `runs.status` gains the value `abandoned`.

ALTER TABLE runs ADD COLUMN pid INTEGER;              -- id of the lune process that runs it
ALTER TABLE runs ADD COLUMN pid_started DOUBLE;       -- that process's start time (epoch s): pids are reused
ALTER TABLE runs ADD COLUMN host VARCHAR;             -- host name of that process (a pid means nothing elsewhere)
