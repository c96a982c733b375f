/// The PostgreSQL outbox's schema, created (version 1) and migrated (to 2) in one transaction by
/// `sluice outbox init`. Times are `timestamptz`; the store passes them as milliseconds through
/// `sluice_at`/`sluice_ms`. A service enqueues inside its own transaction with
/// `SELECT sluice_enqueue(sender, recipients, content, idempotency_key, not_before)`.
enum PostgresSchema {
    static let version = 2

    /// Creates version 1 when there is no schema; refuses a newer one, touching nothing.
    static let create = #"""
        DO $do$
        DECLARE
            current_version integer := 0;
        BEGIN
            PERFORM pg_advisory_xact_lock(7231541);
            IF to_regclass('sluice_schema') IS NOT NULL THEN
                SELECT coalesce(max(version), 0) INTO current_version FROM sluice_schema;
            END IF;
            IF current_version > 2 THEN
                RAISE EXCEPTION 'the outbox has schema version %, newer than this Sluice knows (2); nothing was changed',
                    current_version;
            END IF;
            IF current_version >= 1 THEN
                RETURN;
            END IF;

            CREATE TABLE sluice_schema (version integer NOT NULL);
            INSERT INTO sluice_schema (version) VALUES (1);

            CREATE FUNCTION sluice_check_schema(expected integer) RETURNS void LANGUAGE plpgsql STABLE AS $f$
            DECLARE
                found_version integer;
            BEGIN
                SELECT max(version) INTO found_version FROM sluice_schema;
                IF found_version > expected THEN
                    RAISE EXCEPTION 'the outbox has schema version %, newer than this Sluice knows (%); nothing was changed',
                        found_version, expected;
                ELSIF found_version < expected THEN
                    RAISE EXCEPTION 'the outbox has schema version %; run `sluice outbox init` to migrate it to %',
                        found_version, expected USING ERRCODE = '55000';
                END IF;
            END $f$;

            CREATE FUNCTION sluice_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
                AS $f$ SELECT floor(extract(epoch FROM t) * 1000)::bigint $f$;
            CREATE FUNCTION sluice_at(ms bigint) RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE
                AS $f$ SELECT to_timestamp(ms / 1000.0) $f$;

            -- A message, stored once however many recipients it has. due_at is when a worker
            -- may claim it next: its not-before time, its next retry, or (while a worker holds
            -- it) its lease's expiry, so a crashed worker's messages come due by themselves.
            -- Updates are frequent: room on each page keeps them cheap, and autovacuum keeps up.
            CREATE TABLE sluice_messages (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                idempotency_key text,
                sender text NOT NULL,
                message_id text,
                size integer NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                not_before timestamptz NOT NULL,
                age_from timestamptz NOT NULL,
                due_at timestamptz,
                attempts integer NOT NULL DEFAULT 0,
                lease_owner text,
                lease_expires_at timestamptz,
                finished_at timestamptz,
                last_error text
            ) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
            CREATE INDEX sluice_messages_due ON sluice_messages (due_at, id) WHERE due_at IS NOT NULL;
            -- Partial: most messages have no key, and an UPDATE that is not HOT adds an entry to
            -- every index the row is in.
            CREATE UNIQUE INDEX sluice_messages_idempotency_key ON sluice_messages (idempotency_key)
                WHERE idempotency_key IS NOT NULL;
            CREATE INDEX sluice_messages_finished ON sluice_messages (finished_at) WHERE finished_at IS NOT NULL;

            -- The content apart from the row every claim and outcome rewrites: an UPDATE copies
            -- the whole row (content under 2 KB is not TOASTed), which would write each message
            -- again at every step.
            CREATE TABLE sluice_contents (
                message_id bigint PRIMARY KEY REFERENCES sluice_messages (id) ON DELETE CASCADE,
                content bytea NOT NULL
            );

            CREATE TABLE sluice_recipients (
                message_id bigint NOT NULL REFERENCES sluice_messages (id) ON DELETE CASCADE,
                position integer NOT NULL,
                address text NOT NULL,
                state text NOT NULL CHECK (state IN ('queued', 'delivered', 'deferred', 'failed', 'expired', 'unknown',
                                                     'cancelled', 'suppressed')),
                attempts integer NOT NULL DEFAULT 0,
                unknown_outcomes integer NOT NULL DEFAULT 0,
                code integer,
                enhanced_code text,
                reply text,
                last_attempt_at timestamptz,
                attempt_times timestamptz[] NOT NULL DEFAULT '{}',
                PRIMARY KEY (message_id, position)
            ) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);

            -- The rate limit every worker shares: a token bucket, one row.
            CREATE TABLE sluice_rate (
                id integer PRIMARY KEY CHECK (id = 1),
                tokens double precision NOT NULL,
                updated_at timestamptz NOT NULL
            );
            INSERT INTO sluice_rate (id, tokens, updated_at) VALUES (1, 0, 'epoch');

            -- Wakes listening workers once per inserting statement.
            CREATE FUNCTION sluice_notify() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN
                PERFORM pg_notify('sluice_outbox', '');
                RETURN NULL;
            END $f$;
            CREATE TRIGGER sluice_messages_notify AFTER INSERT ON sluice_messages
                FOR EACH STATEMENT EXECUTE FUNCTION sluice_notify();

            -- sluice_enqueue_message and sluice_enqueue come with version 2 (they consult the
            -- suppression list).
        END $do$
        """#

    /// Version 2: each recipient's bounce class, and the suppression list, which enqueueing in
    /// SQL (`sluice_enqueue`) consults too. Nothing when the schema is at 2 already.
    static let migrateTo2 = #"""
        DO $do$
        DECLARE
            current_version integer;
        BEGIN
            PERFORM pg_advisory_xact_lock(7231541);
            SELECT coalesce(max(version), 0) INTO current_version FROM sluice_schema;
            IF current_version >= 2 THEN
                RETURN;
            END IF;

            ALTER TABLE sluice_recipients ADD COLUMN bounce_class text;
            -- Bounced: accepted by the relay, then reported undeliverable.
            ALTER TABLE sluice_recipients DROP CONSTRAINT sluice_recipients_state_check;
            ALTER TABLE sluice_recipients ADD CONSTRAINT sluice_recipients_state_check
                CHECK (state IN ('queued', 'delivered', 'deferred', 'failed', 'expired', 'unknown', 'cancelled', 'suppressed',
                                 'bounced'));

            -- The outbox's secret, which authenticates the ENVID every message is sent with.
            CREATE TABLE sluice_settings (name text PRIMARY KEY, value text NOT NULL);
            INSERT INTO sluice_settings (name, value)
                VALUES ('secret', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

            -- Reports that carry no ENVID are matched by the returned Message-ID.
            CREATE INDEX sluice_messages_message_id ON sluice_messages (message_id) WHERE message_id IS NOT NULL;

            -- Addresses (user@example.com) and domains (example.com) nothing is sent to, kept in
            -- ASCII lower case.
            CREATE TABLE sluice_suppressions (
                target text PRIMARY KEY,
                reason text NOT NULL,
                detail text,
                created_at timestamptz NOT NULL,
                expires_at timestamptz
            );

            -- What Sluice's Swift side does to a target: ASCII letters only, whatever the collation.
            CREATE FUNCTION sluice_lower_ascii(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
                AS $f$ SELECT translate(t, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $f$;

            CREATE OR REPLACE FUNCTION sluice_enqueue_message(
                p_sender text, p_recipients text[], p_content bytea, p_idempotency_key text DEFAULT NULL,
                p_not_before timestamptz DEFAULT NULL, p_message_id text DEFAULT NULL, p_suppressed integer[] DEFAULT '{}',
                p_now timestamptz DEFAULT now())
            RETURNS TABLE (id bigint, existed boolean) LANGUAGE plpgsql AS $f$
            DECLARE
                v_id bigint;
                v_due timestamptz := greatest(p_now, coalesce(p_not_before, p_now));
                v_pending boolean;
                v_suppressed integer[];
            BEGIN
                IF p_idempotency_key IS NOT NULL THEN
                    SELECT m.id INTO v_id FROM sluice_messages m WHERE m.idempotency_key = p_idempotency_key;
                    IF FOUND THEN
                        RETURN QUERY SELECT v_id, true;
                        RETURN;
                    END IF;
                END IF;
                IF coalesce(cardinality(p_recipients), 0) = 0 THEN
                    RAISE EXCEPTION 'a message needs at least one recipient' USING ERRCODE = '22023';
                END IF;
                IF p_sender ~ '[\r\n<>[:space:]]' OR EXISTS (
                    SELECT 1 FROM unnest(p_recipients) AS a(address) WHERE a.address !~ '^[^\r\n<>[:space:]]+@[^\r\n<>[:space:]]+$'
                ) THEN
                    RAISE EXCEPTION 'an envelope address is malformed' USING ERRCODE = '22023';
                END IF;
                -- Positions on the suppression list (the address, or its domain), besides those given.
                v_suppressed := coalesce(p_suppressed, '{}') || ARRAY(
                    SELECT t.ord::integer - 1 FROM unnest(p_recipients) WITH ORDINALITY AS t(address, ord)
                    WHERE EXISTS (
                        SELECT 1 FROM sluice_suppressions s
                        WHERE s.target IN (sluice_lower_ascii(t.address), sluice_lower_ascii(substring(t.address FROM '@([^@]*)$')))
                            AND (s.expires_at IS NULL OR s.expires_at > p_now)));
                v_pending := EXISTS (SELECT 1 FROM generate_subscripts(p_recipients, 1) AS s(i)
                                     WHERE NOT (s.i - 1 = ANY (v_suppressed)));
                INSERT INTO sluice_messages (idempotency_key, sender, message_id, size, created_at, not_before,
                                             age_from, due_at, finished_at)
                VALUES (p_idempotency_key, p_sender, p_message_id, length(p_content), p_now, v_due, v_due,
                        CASE WHEN v_pending THEN v_due END, CASE WHEN NOT v_pending THEN p_now END)
                ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING sluice_messages.id INTO v_id;
                IF v_id IS NULL THEN
                    -- Another transaction enqueued the same key first, and committed.
                    SELECT m.id INTO v_id FROM sluice_messages m WHERE m.idempotency_key = p_idempotency_key;
                    RETURN QUERY SELECT v_id, true;
                    RETURN;
                END IF;
                INSERT INTO sluice_contents (message_id, content) VALUES (v_id, p_content);
                INSERT INTO sluice_recipients (message_id, position, address, state)
                SELECT v_id, t.ord - 1, t.address, CASE WHEN t.ord - 1 = ANY (v_suppressed) THEN 'suppressed' ELSE 'queued' END
                FROM unnest(p_recipients) WITH ORDINALITY AS t(address, ord);
                RETURN QUERY SELECT v_id, false;
            END $f$;

            -- For services: enqueue inside your own transaction (the transactional outbox).
            CREATE OR REPLACE FUNCTION sluice_enqueue(sender text, recipients text[], content bytea,
                                           idempotency_key text DEFAULT NULL, not_before timestamptz DEFAULT NULL)
            RETURNS bigint LANGUAGE sql AS $f$
                SELECT e.id FROM sluice_enqueue_message(sender, recipients, content, idempotency_key, not_before) AS e
            $f$;

            UPDATE sluice_schema SET version = 2;
        END $do$
        """#
}
