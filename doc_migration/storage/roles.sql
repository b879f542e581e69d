-- doc_migration: least-privilege setup of the target database (docs/security.md#least-privilege-role).
--
-- Run it ONCE per target database, connected to that database as a superuser (pgvector is not a
-- trusted extension, and CREATE ROLE needs CREATEROLE):
--
--   psql "postgresql://postgres@db.example.internal/docs?sslmode=verify-full" \
--        -v ON_ERROR_STOP=1 -f doc_migration/storage/roles.sql
--
-- then give the login role its password out of band; psql's \password sends it already hashed
-- (SCRAM), so it never appears in a file, a shell history or the server log:
--
--   psql "postgresql://postgres@db.example.internal/docs" -c '\password doc_migrator'
--
-- It is idempotent: run it again after restoring a dump or to adopt an existing installation
-- (existing doc-server tables and pipeline tables are handed to the owner role).
--
-- Roles (cluster-wide):
--   doc_migration_owner  NOLOGIN. Owns the pipeline schema `doc_migration` and the doc-server's
--                        tables `documents`, `document_sources` and their indexes (building the
--                        HNSW index needs ownership). Nobody logs in as it.
--   doc_migrator         LOGIN, the user of DATABASE_URL. A member of doc_migration_owner whose
--                        sessions switch to it (ALTER ROLE ... SET role), so everything a migration
--                        creates is owned by doc_migration_owner, and the login role can be rotated
--                        or replaced without reassigning objects. NOSUPERUSER NOCREATEDB NOCREATEROLE
--                        NOREPLICATION NOBYPASSRLS; no CREATE on the database.
--   doc_server_reader    NOLOGIN. What the doc-server needs: SELECT on documents and
--                        document_sources. Grant it to the doc-server's login role:
--                          GRANT doc_server_reader TO doc_server;
--
-- What the migration can then do, and nothing more: CONNECT; TEMPORARY tables (the load stage
-- stages rows in them); everything inside the `doc_migration` schema; CREATE in `public` (the
-- doc-server tables and their indexes live there: CREATE TABLE/INDEX ... IF NOT EXISTS checks
-- this privilege even when the object exists) and, as their owner, everything on `documents`
-- and `document_sources`. It cannot create schemas, databases or roles, read other schemas, or
-- touch other tables in `public` it does not own.
--
-- Other names: replace doc_migrator / doc_migration_owner / doc_server_reader throughout; if
-- DOC_MIGRATION_SCHEMA is not `doc_migration`, replace the schema name too; if the doc-server's
-- tables live in another schema than `public`, replace `public` and the search_path below.

\set ON_ERROR_STOP on

-- 1. pgvector (CREATE EXTENSION needs a superuser: vector is not marked trusted).
CREATE EXTENSION IF NOT EXISTS vector;

-- 2. Roles.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doc_migration_owner') THEN
        CREATE ROLE doc_migration_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doc_migrator') THEN
        -- No password here: set it with \password (see the top of this file).
        CREATE ROLE doc_migrator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doc_server_reader') THEN
        CREATE ROLE doc_server_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
END
$roles$;
-- Attributes are enforced even when the roles existed before this script.
ALTER ROLE doc_migration_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE doc_migrator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE doc_server_reader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT doc_migration_owner TO doc_migrator;

-- 3. This database: connect (the login role), temporary tables (the role sessions act as).
--    Deliberately no CREATE on the database: the schema is created here, below.
DO $db$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO doc_migrator', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO doc_migration_owner', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO doc_server_reader', current_database());
    -- Every session of doc_migrator in this database acts as doc_migration_owner and resolves
    -- unqualified names (documents) in public only: with the default "$user", public a role named
    -- like the pipeline schema would create the doc-server tables inside that schema.
    EXECUTE format('ALTER ROLE doc_migrator IN DATABASE %I SET role = %L', current_database(), 'doc_migration_owner');
    EXECUTE format('ALTER ROLE doc_migrator IN DATABASE %I SET search_path = public', current_database());
END
$db$;

-- 4. The pipeline's own schema, owned by the owner role (adopting what a previous setup made).
CREATE SCHEMA IF NOT EXISTS doc_migration AUTHORIZATION doc_migration_owner;
ALTER SCHEMA doc_migration OWNER TO doc_migration_owner;
DO $adopt$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
        WHERE c.relnamespace = 'doc_migration'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
          AND c.relowner <> 'doc_migration_owner'::regrole
          -- sequences owned by a column follow their table
          AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO doc_migration_owner',
                       CASE obj.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                        WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, obj.name);
    END LOOP;
END
$adopt$;

-- 5. The doc-server's schema: the owner role creates (or adopts) documents/document_sources there.
GRANT USAGE, CREATE ON SCHEMA public TO doc_migration_owner;
DO $docserver$
BEGIN
    IF to_regclass('public.documents') IS NOT NULL THEN
        ALTER TABLE public.documents OWNER TO doc_migration_owner;
    END IF;
    IF to_regclass('public.document_sources') IS NOT NULL THEN
        ALTER TABLE public.document_sources OWNER TO doc_migration_owner;
    END IF;
END
$docserver$;

-- 6. The doc-server reads, and only reads, what the migration writes (now and in the future).
GRANT USAGE ON SCHEMA public TO doc_server_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE doc_migration_owner IN SCHEMA public GRANT SELECT ON TABLES TO doc_server_reader;
DO $reader$
BEGIN
    IF to_regclass('public.documents') IS NOT NULL THEN
        GRANT SELECT ON public.documents TO doc_server_reader;
    END IF;
    IF to_regclass('public.document_sources') IS NOT NULL THEN
        GRANT SELECT ON public.document_sources TO doc_server_reader;
    END IF;
END
$reader$;

-- Optional hardening on PostgreSQL 14 and older (15+ already does this): nobody else creates in public.
--   REVOKE CREATE ON SCHEMA public FROM PUBLIC;
