-- Database roles made by `gis db grant` read their own claims (and nobody else's) in row-level security
-- policies: the policies look a claim up by current_user, so each login role sees only its own rows here.
-- The table's owner (the service account that runs `gis db grant`) is not subject to these policies.
ALTER TABLE ops.db_role_claims ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_claims ON ops.db_role_claims FOR SELECT USING (role_name = current_user);
