"""An active/standby pair: a lease in the shared PostgreSQL, and the node that holds it."""
