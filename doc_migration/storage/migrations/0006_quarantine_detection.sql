-- Issue 15: every refused file says which format it was read as and why (the evidence:
-- "extension '.md'", "top-level key 'openapi'", "binary file (PNG image)"...). Loaded files carry
-- the same two facts in their rows' metadata (detected_format, detected_by). NULL: recorded
-- before this migration, or refused by a repair rather than by a parser.
ALTER TABLE @SCHEMA@.quarantine ADD COLUMN format text, ADD COLUMN detected_by text;
