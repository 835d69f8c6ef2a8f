"""Database: the embedded cluster, connections and migrations."""
