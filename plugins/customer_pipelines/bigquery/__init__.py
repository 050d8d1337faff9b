"""BigQuery: the client hook, the SQL files and the store every read and write goes through."""
