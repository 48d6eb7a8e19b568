-- Placeholder for the migration number 006, reserved for another change on its own branch;
-- replaced by that migration when the branches are merged.
SELECT 1;
