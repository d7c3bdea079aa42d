"""Control + Ingress plane: Scenario Runner, World Stream Producer, Ingestion Gate."""
