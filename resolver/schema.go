package resolver

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Channel is the LISTEN/NOTIFY channel on which the trigger of [SchemaSQL]
// announces changed tenants. The payload is the tenant id, or "" when every
// cached tenant must be dropped (TRUNCATE, or an id too long for a payload).
const Channel = "qx_tenant_regions"

// SchemaSQL creates the qx_tenant_regions table and the triggers that
// NOTIFY [Channel] on every change. It is idempotent (it can run at every
// deploy) and needs PostgreSQL 14 or newer (CREATE OR REPLACE TRIGGER). It is
// exported for `qx-regions setup` and for users' own migration tools.
//
// The triggers are ENABLE ALWAYS: when the table reaches a region by logical
// replication, the apply worker writes it with session_replication_role =
// replica, under which ordinary triggers do not fire, and that region's
// resolvers would never hear of the change. The ALTER TABLE runs after
// CREATE OR REPLACE TRIGGER, which may reset the firing mode, so a re-run
// also upgrades a table set up before.
//
// An update that changes a tenant id notifies both the old and the new id.
// NOTIFY payloads must stay under 8000 bytes, so a longer id (which
// [ValidateTenantID] never lets through, but plain SQL might) notifies "".
const SchemaSQL = `CREATE TABLE IF NOT EXISTS qx_tenant_regions (
    tenant_id  text PRIMARY KEY,
    region     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION qx_tenant_regions_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('qx_tenant_regions', '');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('qx_tenant_regions',
            CASE WHEN octet_length(OLD.tenant_id) < 8000 THEN OLD.tenant_id ELSE '' END);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.tenant_id IS DISTINCT FROM OLD.tenant_id) THEN
        PERFORM pg_notify('qx_tenant_regions',
            CASE WHEN octet_length(NEW.tenant_id) < 8000 THEN NEW.tenant_id ELSE '' END);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER qx_tenant_regions_notify
    AFTER INSERT OR UPDATE OR DELETE ON qx_tenant_regions
    FOR EACH ROW EXECUTE FUNCTION qx_tenant_regions_notify();

CREATE OR REPLACE TRIGGER qx_tenant_regions_notify_truncate
    AFTER TRUNCATE ON qx_tenant_regions
    FOR EACH STATEMENT EXECUTE FUNCTION qx_tenant_regions_notify();

ALTER TABLE qx_tenant_regions
    ENABLE ALWAYS TRIGGER qx_tenant_regions_notify,
    ENABLE ALWAYS TRIGGER qx_tenant_regions_notify_truncate;
`

// Execer runs SQL; *pgxpool.Pool, *pgx.Conn and pgx.Tx all satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Setup runs [SchemaSQL]. Without arguments pgx sends it as one simple
// query, which PostgreSQL runs in one implicit transaction: all or nothing.
func Setup(ctx context.Context, db Execer) error {
	if _, err := db.Exec(ctx, SchemaSQL); err != nil {
		return fmt.Errorf("set up %s: %w", Channel, err)
	}
	return nil
}
