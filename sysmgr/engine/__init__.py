"""The engine: imperative operations on one host (``host.Host``) and the declarative path
(observe -> pure planner -> Plan of typed actions -> apply with a reverter)."""
