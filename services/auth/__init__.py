"""Authentication and authorisation: who calls (credentials), what they may see (visibility), what is logged
(read_audit). The audit log itself is a router: services/routers/audit.py."""
