-- When each resource's last lease ended, kept on the resource for least-recently-used
-- placement: computing it from `leases` (MAX over every lease ever granted) cost a scan
-- of the whole lease history on each manual acquire and scheduler pass.
ALTER TABLE resources ADD COLUMN last_lease_end TEXT;
UPDATE resources SET last_lease_end =
    (SELECT MAX(ended_at) FROM leases WHERE leases.resource_id = resources.id);
