"""PostgreSQL: connection, schema migrations, partition loading and the ledger."""
