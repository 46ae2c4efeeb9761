-- Every index a lease or resource write touches is one more 4 KiB page appended to the
-- WAL at commit. Active leases are few and are the only ones looked up by resource, so
-- one small partial index serves every query (a resource's active leases, "is it free",
-- the reaper's list); ended leases are found by id. Resources are listed whole (there
-- are at most thousands), so (kind, state) saved nothing and was rewritten on every
-- lease.
DROP INDEX leases_resource_state;
DROP INDEX leases_state_expiry;
DROP INDEX resources_kind_state;
CREATE INDEX leases_active ON leases (resource_id) WHERE state = 'active';
